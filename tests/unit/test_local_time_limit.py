"""The local runner's time limit, run for real (``/bin/sh`` for the scheduler's commands, the runner's
own bash): a job over its ``max_time`` is killed, process group and all, and is listed ``timeout``
for a while (so it is reported died at its time limit), then forgotten; a job within it is not."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.helpers.processes import alive
from wfl_async.scheduler import JobScriptSpec, LocalScheduler, QueueState
from wfl_async.scheduler.local import TIMEOUT_LISTED_SECONDS


def sh(command: str) -> str:
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=True).stdout


def submit(sched: LocalScheduler, d: Path, max_time: int, commands: list[str]) -> str:
    d.mkdir()
    spec = JobScriptSpec(job_id="t", job_dir=str(d), partition="local", num_nodes=1, num_cores=1,
                         num_cores_per_node=1, max_time=max_time, commands=commands)
    (d / sched.script_name).write_text(sched.render_script(spec))
    remote_id = sched.parse_submit_output(sh(sched.submit_command([str(d)])), 1)[0].remote_id
    assert remote_id is not None
    return remote_id


def wait_until_gone(sched: LocalScheduler, remote_id: str) -> dict[str, QueueState]:
    for _ in range(200):
        states = sched.parse_status_output(sh(sched.status_command()))
        if states.get(remote_id) not in (QueueState.QUEUED, QueueState.RUNNING):
            return states
        time.sleep(0.1)
    raise AssertionError(f"local job {remote_id} still running")


def test_a_job_over_its_time_limit_is_killed_and_listed_as_timeout_then_forgotten(tmp_path: Path) -> None:
    sched = LocalScheduler(slot_dir=str(tmp_path / "slots"), max_jobs=2)
    # a child of the job script (in the background) is killed too: the whole process group
    over = submit(sched, tmp_path / "over", 1, ["sleep 30 & echo $! > child.pid", "sleep 30", "touch done"])
    within = submit(sched, tmp_path / "within", 30, ["touch done"])
    assert wait_until_gone(sched, over)[over] is QueueState.TIMEOUT
    wait_until_gone(sched, within)
    assert not (tmp_path / "over" / "done").exists() and (tmp_path / "within" / "done").exists()
    assert not alive(int((tmp_path / "over" / "child.pid").read_text()))
    assert sched.parse_status_output(sh(sched.status_command())).get(within) is None
    # listed while young; forgotten (and its entry removed) once older than TIMEOUT_LISTED_SECONDS
    (entry,) = (tmp_path / "slots" / "jobs").glob(f"{over}")
    state, workdir, when = entry.read_text().split("\n")[:3]
    entry.write_text(f"{state}\n{workdir}\n{int(when) - TIMEOUT_LISTED_SECONDS - 1}\n")
    assert sched.parse_status_output(sh(sched.status_command())) == {}
    assert not entry.exists()
