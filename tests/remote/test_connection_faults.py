"""A dropped ssh connection at any moment of a real workflow: reconnected, and the run goes on.

The driver runs as a workflow script in a subprocess against a real system over ssh. The
fault is injected into the real sshd: the sshd process serving the driver's connection is
killed (SIGKILL, what a login node does when it drops a session) while the driver's
command for one phase is running — the upload stream, the submission (held for a second by
a ``sleep`` in the test-owned config's ``pre_submit_cmds``), or the fetch of large results —
or a test-owned sshd is stopped for a few seconds during the submission and started again.
The rerun-free run must give the serial answers, and every job exactly once (each job logs
its executions; a repeated submission would show as a line twice).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import remote_functions as rf
from tests.helpers.sshd import OwnSshd, wait_and_kill_serving_sshd

pytestmark = pytest.mark.remote

REPO = Path(__file__).resolve().parents[2]
INPUT_SIZE = 8 * 1024 * 1024
RESULT_SIZE = 4 * 1024 * 1024
FETCH_RESULT_SIZE = 24 * 1024 * 1024
"""Where the fault is injected during a fetch: a fetch of 4 MB results lasted 20-60 ms here, shorter
than a look through /proc under load (the fault was missed in 2 of 4 runs)."""
JOBS = 6
SSH_SYSTEMS = [n for n in ("slurm_ssh", "local_ssh", "sge_ssh", "pbs_ssh")
               if re.search(os.environ.get("EXPYRE_PYTEST_SYSTEMS", ""), n)]

SCRIPT = """
import hashlib, json, sys, time
import anyio
from tests.helpers.remote_functions import input_digest_and_bytes
from wfl_async.job import RemoteJob

async def main():
    options, size = json.loads(sys.argv[2]), int(sys.argv[3])
    name = options.pop("job_name")
    answers = {}
    async def one(i):
        digest, value = await RemoteJob(input_digest_and_bytes, (i, size, "input.bin"), job_name=f"{name}-{i}",
                                        input_files=["input.bin"], **options)
        answers[i] = [digest, hashlib.sha256(value).hexdigest()]
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(int(sys.argv[4])):
            tg.start_soon(one, i)
    with open(sys.argv[1], "w") as f:
        json.dump({"answers": answers, "seconds": time.monotonic() - started}, f)
anyio.run(main)
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the test user of the sshd (wfltest) can write its execution log to."""
    path = Path(tempfile.mkdtemp(prefix="wfl_async_faults_", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _test_system(expyre_root: Path, base: str, name: str, **changes: object) -> None:
    """Add system ``name`` to the test's own config.json: ``base`` with ``changes`` (a fault injected)."""
    config_file = expyre_root / "config.json"
    config = json.loads(config_file.read_text())
    entry = dict(config["systems"][base])
    pre = changes.pop("extra_pre_submit_cmds", [])
    entry["pre_submit_cmds"] = [*entry.get("pre_submit_cmds", []), *pre]  # type: ignore[list-item]
    entry.update(changes)
    config["systems"][name] = entry
    config_file.write_text(json.dumps(config, indent=1))


def _base_rundir(expyre_root: Path, system: str) -> str:
    return str(json.loads((expyre_root / "config.json").read_text())["systems"][system]["rundir"])


def _run(expyre_root: Path, tmp_path: Path, shared_dir: Path, system: str,
         fault: Callable[[subprocess.Popen[bytes], str], dict[str, object]],
         result_size: int = RESULT_SIZE) -> tuple[dict[str, object], str]:
    log, output, script = shared_dir / "executions.log", tmp_path / "answers.json", tmp_path / "workflow.py"
    script.write_text(SCRIPT)
    (tmp_path / "input.bin").write_bytes(os.urandom(INPUT_SIZE))
    job_name = f"fault{uuid.uuid4().hex[:8]}"
    options = {"sys_name": system, "job_name": job_name, "resources": {"num_cores": 1, "max_time": "10m"},
               "partial_node": True, "check_interval": 0.5, "env_vars": [f"WFL_TEST_RUN_LOG={log}"]}
    proc = subprocess.Popen([sys.executable, str(script), str(output), json.dumps(options), str(result_size),
                             str(JOBS)],
                            # the commands' text where the injector finds our driver's (transport/shell_session.py)
                            env=dict(os.environ, EXPYRE_ROOT=str(expyre_root), PYTHONPATH=str(REPO),
                                     WFL_ASYNC_SHOW_COMMANDS="1"),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: dict[str, object] = {}
    injector = threading.Thread(target=lambda: seen.update(fault(proc, job_name)))
    injector.start()
    _, err = proc.communicate(timeout=900)
    injector.join()
    assert proc.returncode == 0, err.decode()[-4000:]
    outcome = json.loads(output.read_text())
    digest = hashlib.sha256((tmp_path / "input.bin").read_bytes()).hexdigest()
    serial = {str(i): [digest, hashlib.sha256(rf.big_result(i, result_size)).hexdigest()] for i in range(JOBS)}
    assert outcome["answers"] == serial, "a result is wrong"
    executed = sorted(log.read_text().splitlines(), key=int)
    assert executed == [str(i) for i in range(JOBS)], f"a job ran twice, or never: {executed}"
    seen["seconds"] = outcome["seconds"]
    return seen, err.decode()


@pytest.mark.parametrize("phase", ["upload", "submit", "fetch"])
@pytest.mark.parametrize("system", SSH_SYSTEMS)
def test_sshd_process_serving_the_driver_killed_during_a_phase_the_run_goes_on(
        system: str, phase: str, fresh_expyre_root: Path, tmp_path: Path, shared_dir: Path) -> None:
    _test_system(fresh_expyre_root, system, "faulty", extra_pre_submit_cmds=["sleep 1.5"])

    def fault(proc: subprocess.Popen[bytes], job_name: str) -> dict[str, object]:
        return wait_and_kill_serving_sshd(phase, job_name, proc, lambda pid: os.kill(pid, signal.SIGKILL))

    seen, err = _run(fresh_expyre_root, tmp_path, shared_dir, "faulty", fault,
                     FETCH_RESULT_SIZE if phase == "fetch" else RESULT_SIZE)
    print(f"\n{system} sshd killed during {phase}: {seen}")
    assert seen["killed"] is not None, "the fault was never injected"
    assert "dropped during a command" in err  # the drop hit a running command, and it was run again


@pytest.mark.parametrize("system", SSH_SYSTEMS[:1])
def test_sshd_process_killed_during_the_first_submission_check_the_run_goes_on(
        system: str, fresh_expyre_root: Path, tmp_path: Path, shared_dir: Path) -> None:
    """The check sent before a system's first submission is repeated after a drop (it only reads)."""
    # a rundir of the test's own: the check's command names it, so only this driver's check is hit
    rundir = f"{_base_rundir(fresh_expyre_root, system)}/check-{uuid.uuid4().hex[:8]}"
    _test_system(fresh_expyre_root, system, "faulty", rundir=rundir)

    def fault(proc: subprocess.Popen[bytes], job_name: str) -> dict[str, object]:
        # a program run by the check's one command
        return wait_and_kill_serving_sshd("check", rundir, proc, lambda pid: os.kill(pid, signal.SIGKILL))

    seen, err = _run(fresh_expyre_root, tmp_path, shared_dir, "faulty", fault)
    print(f"\n{system} sshd killed during the first-submission check: {seen}")
    assert seen["killed"] is not None, "the fault was never injected"
    assert "dropped during a command" in err  # the drop hit the check's command, and it was run again


@pytest.mark.parametrize("system", SSH_SYSTEMS[:1])
def test_sshd_stopped_for_seconds_during_submission_the_run_goes_on(
        system: str, fresh_expyre_root: Path, tmp_path: Path, shared_dir: Path) -> None:
    own = OwnSshd(tmp_path / "own_sshd")
    own.start()
    _test_system(fresh_expyre_root, system, "own_sshd", host=own.alias, ssh_config=str(own.ssh_config),
                 extra_pre_submit_cmds=["sleep 1.5"])
    outage = 6.0

    def fault(proc: subprocess.Popen[bytes], job_name: str) -> dict[str, object]:
        stopped: dict[str, object] = {}

        def stop(_: int) -> None:
            own.stop()
            stopped["stopped_at"] = time.monotonic()

        seen = wait_and_kill_serving_sshd("submit", job_name, proc, stop)
        if seen["killed"] is not None:
            time.sleep(outage)
            own.start()
        return {**seen, **stopped}

    try:
        seen, err = _run(fresh_expyre_root, tmp_path, shared_dir, "own_sshd", fault)
    finally:
        own.stop()
    print(f"\n{system} via own sshd stopped {outage} s during submission: {seen}")
    assert seen["killed"] is not None, "the fault was never injected"
    assert "connecting to" in err and "failed" in err  # it really was refused for a while
