"""A job the user cancels (``wfl-async cancel``, another process) is reported as cancelled, on the real Slurm.

The workflow waiting for it raises :class:`JobCancelledError` (never "died ... set
resubmit_killed_jobs"), a call whose chunk was cancelled stops and says which of its other
jobs it left running, and ``wfl-async rerun`` makes the next run submit it afresh.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from ase.build import bulk

from tests.cli.test_cli import by_name, cli, cli_json, make_job, root, submit, token  # noqa: F401 (root: fixture)
from tests.helpers import remote_functions as rf
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import JobCancelledError, JobDiedError

pytestmark = pytest.mark.remote


def wait_for(predicate: Any, deadline: float = 120) -> dict[str, dict[str, Any]]:
    """The jobs once ``predicate(jobs by name)`` holds (the jobs run on the real queue)."""
    end = time.monotonic() + deadline
    while True:
        listed = cli("ls", "--json")  # fails while the workflow is still creating the database
        jobs = by_name(json.loads(listed.stdout)) if listed.exit_code == 0 else {}
        if predicate(jobs):
            return jobs
        assert time.monotonic() < end, jobs
        time.sleep(0.5)


def test_a_waiting_job_cancelled_by_the_user_raises_job_cancelled_error(root: Path) -> None:  # noqa: F811
    t = token()
    name = f"victim-{t}"
    with ThreadPoolExecutor(1) as pool:
        waiting: Future[Any] = pool.submit(anyio.run, make_job("slurm", name, rf.sleep_then_return, 300, 1).aio)
        wait_for(lambda jobs: jobs.get(name, {}).get("status") in ("submitted", "started"))
        result = cli("cancel", "-n", name)
        assert result.exit_code == 0 and "1 cancelled" in result.stdout, result.output
        with pytest.raises(JobCancelledError) as info:
            waiting.result(timeout=120)
    message = str(info.value)
    assert "cancelled by the user" in message and "resubmit_killed_jobs" not in message
    assert f"wfl-async rerun -n {name}" in message
    assert isinstance(info.value, JobDiedError)  # ExPyRe scripts catching died jobs still catch it
    # the workflow's poll saw it leave the queue after the cancel: it stays cancelled, not died
    assert by_name(cli_json("-n", name))[name]["status"] == "cancelled"

    # a rerun of the workflow says the same at once, submitting nothing
    start = time.monotonic()
    with pytest.raises(JobCancelledError):
        anyio.run(make_job("slurm", name, rf.sleep_then_return, 300, 1).aio)
    assert time.monotonic() - start < 30
    old_id = by_name(cli_json("-n", name))[name]["remote_id"]

    # until the user asks for it to run again
    marked = cli("rerun", name)
    assert marked.exit_code == 0 and "1 job(s) marked (1 cancelled)" in marked.stdout
    assert by_name(cli_json("-n", name))[name]["status"] == "rerun"
    submit(make_job("slurm", name, rf.sleep_then_return, 300, 1))
    again = by_name(cli_json("-n", name))[name]
    assert again["status"] in ("submitted", "started") and again["remote_id"] != old_id
    cli("cancel", "-n", name)


def test_a_call_with_a_cancelled_chunk_stops_and_names_the_jobs_it_left(root: Path,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    t = token()
    call = f"call{t}"
    inputs = []
    for i in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.info["i"] = i
        inputs.append(atoms)
    info = RemoteInfo(sys_name="slurm", job_name=call, resources={"num_nodes": 1, "max_time": "10m"},
                      check_interval=0.3, num_inputs_per_queued_job=1, env_vars=["WFL_TEST_SLEEP=300"])

    def run() -> None:
        rf.label_or_raise(ConfigSet(inputs), OutputSpec(tmp_path / "out.xyz"),
                          autopara_info=AutoparaInfo(remote_info=info, num_inputs_per_python_subprocess=1))

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(run)
        wait_for(lambda jobs: sum(1 for n, r in jobs.items() if n.startswith(call)
                                  and r["status"] in ("submitted", "started")) == 3)
        # the report works on the run in progress: its jobs measured up to now
        progress = cli("report", call, "--json")
        assert progress.exit_code == 0, progress.output
        numbers = json.loads(progress.stdout)
        assert numbers["in_progress"] and numbers["jobs"] == 3 and numbers["failures"] == []
        assert cli("cancel", "-n", f"{call}_chunk_0").exit_code == 0
        with pytest.raises(JobCancelledError) as info_:
            waiting.result(timeout=120)
    notes = "\n".join(getattr(info_.value, "__notes__", []))
    assert "1 of the call's 3 jobs were cancelled; its other 2 unfinished job(s) were left queued or running" in notes
    assert f"wfl-async cancel -n '{call}_chunk_.*'" in notes or f"wfl-async cancel -n {call}_chunk_.*" in notes
    jobs = by_name(cli_json("-n", f"{call}.*"))
    assert jobs[f"{call}_chunk_0"]["status"] == "cancelled"
    assert {jobs[f"{call}_chunk_{i}"]["status"] for i in (1, 2)} <= {"submitted", "started"}
    assert cli("cancel", "-n", f"{call}_chunk_.*").exit_code == 0
