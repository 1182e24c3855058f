"""A cluster's ordinary bad day, injected into the real Slurm: flaky sbatch, lost answers, a failing squeue.

Each fault is a wrapper program put first on the system's PATH through a test-owned
config.json (``pre_submit_cmds``), in front of the real ``sbatch``/``squeue``. The wrapper
logs every job directory that the real ``sbatch`` took, so a duplicate submission shows as
a directory listed twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest

from wfl_async.job import RemoteJob
from wfl_async.jobs.states import JobStatus
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote


@pytest.fixture(autouse=True)
def _no_first_submission_check(monkeypatch: pytest.MonkeyPatch) -> None:
    # these wrappers make the scheduler fail on purpose; the first-submission check (wfl-async
    # doctor) would report that before the submit loop's own handling is reached
    monkeypatch.setenv("WFL_ASYNC_SKIP_SYSTEM_CHECK", "1")

RESOURCES = {"num_nodes": 1, "max_time": "10m"}
TIMEOUT_TEXT = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
LIMIT_TEXT = ("sbatch: error: QOSMaxSubmitJobPerUserLimit\n"
              "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
              "(job submit limit, user's size and/or time limits)")

# $1 = the wrapper's state dir, $2 = mode; "$@" after shift 2 = sbatch's own arguments.
_SBATCH = r"""#!/bin/bash
state=__STATE__; mode=$(cat "$state/mode"); every=__EVERY__
n=$(flock "$state/lock" bash -c 'n=$(( $(cat "$1/count" 2>/dev/null || echo 0) + 1 )); echo $n > "$1/count"; echo $n' _ "$state")
real() { out=$(/usr/bin/sbatch "$@" 2>&1); rc=$?; [ $rc -eq 0 ] && echo "$PWD" >> "$state/submitted"; }
if [ $((n % every)) -eq 0 ]; then
    case $mode in
        fail) echo "__TIMEOUT__" >&2; exit 1 ;;
        submit_then_fail) real "$@"; echo "$out"; echo "__TIMEOUT__" >&2; exit 1 ;;
        submit_and_drop) real "$@"; exit 1 ;;
        hang) echo $$ >> "$state/hung"; sleep 600; exit 1 ;;
        submit_then_hang) real "$@"; echo $$ >> "$state/hung"; sleep 600; exit 1 ;;
        limit) if [ "$(squeue -h --user="$(id -un)" -n "$WFL_LIMIT_NAME" | wc -l)" -ge 3 ]; then
                   printf '%s\n' "__LIMIT__" >&2; exit 1; fi ;;
    esac
fi
real "$@"; echo "$out"; exit $rc
"""

_SQUEUE = r"""#!/bin/bash
state=__STATE__
n=$(flock "$state/lock" bash -c 'n=$(( $(cat "$1/squeue" 2>/dev/null || echo 0) + 1 )); echo $n > "$1/squeue"; echo $n' _ "$state")
if [ $((n % 2)) -eq 1 ]; then
    echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1
fi
exec /usr/bin/squeue "$@"
"""


def _faulty_system(root: Path, state: Path, *, mode: str = "none", every: int = 4, squeue: bool = False,
                   grace: float = 5) -> str:
    """Add a copy of the ``slurm`` system whose PATH starts with the wrappers; return its name."""
    bin_dir = state / "bin"
    bin_dir.mkdir(parents=True)
    (state / "mode").write_text(mode)
    script = (_SBATCH.replace("__STATE__", str(state)).replace("__EVERY__", str(every))
              .replace("__TIMEOUT__", TIMEOUT_TEXT).replace("__LIMIT__", LIMIT_TEXT.replace("\n", "\\n")))
    (bin_dir / "sbatch").write_text(script)
    (bin_dir / "sbatch").chmod(0o755)
    if squeue:
        (bin_dir / "squeue").write_text(_SQUEUE.replace("__STATE__", str(state)))
        (bin_dir / "squeue").chmod(0o755)
    config = json.loads((root / "config.json").read_text())
    entry = dict(config["systems"]["slurm"])
    entry["pre_submit_cmds"] = [f"export PATH={bin_dir}:$PATH", *entry.get("pre_submit_cmds", [])]
    entry["died_grace_seconds"] = grace
    name = f"slurm_{mode}{'_squeue' if squeue else ''}"
    config["systems"][name] = entry
    (root / "config.json").write_text(json.dumps(config, indent=1))
    return name


def _submitted(state: Path) -> list[str]:
    path = state / "submitted"
    return path.read_text().split() if path.exists() else []


async def _run_all(system: str, n: int, tag: str) -> list[int]:
    jobs = [RemoteJob(operator.add, (i, 1000), sys_name=system, job_name=f"{tag}-{i}", resources=RESOURCES,
                      check_interval=0.5) for i in range(n)]
    results: dict[int, int] = {}
    async with session_scope() as session:
        prepared = [j.prepare(session) for j in jobs]

        async def one(index: int) -> None:
            results[index] = await prepared[index].result()

        async with anyio.create_task_group() as tg:
            for index in range(n):
                tg.start_soon(one, index)
    return [results[i] for i in range(n)]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "faults"
    path.mkdir()
    yield path
    shutil.rmtree(path / "bin", ignore_errors=True)


async def test_sbatch_timing_out_one_call_in_four_never_fails_a_200_job_call(
        fresh_expyre_root: Path, state: Path, caplog: pytest.LogCaptureFixture) -> None:
    system = _faulty_system(fresh_expyre_root, state, mode="fail", every=4)
    caplog.set_level(logging.INFO, logger="wfl_async")
    tag = f"flaky-{uuid.uuid4().hex[:6]}"
    assert await _run_all(system, 200, tag) == [i + 1000 for i in range(200)]
    submitted = _submitted(state)
    assert len(submitted) == len(set(submitted)) == 200  # every job once, none twice
    assert int((state / "count").read_text()) > 200  # the fault did happen
    assert "could not take it now" in caplog.text and "Socket timed out" in caplog.text


@pytest.mark.parametrize("mode", ["submit_then_fail", "submit_and_drop"])
async def test_sbatch_that_queues_the_job_and_then_fails_gives_no_duplicate(
        fresh_expyre_root: Path, state: Path, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    system = _faulty_system(fresh_expyre_root, state, mode=mode, every=2)
    caplog.set_level(logging.INFO, logger="wfl_async")
    tag = f"lost-{uuid.uuid4().hex[:6]}"
    assert await _run_all(system, 16, tag) == [i + 1000 for i in range(16)]
    submitted = _submitted(state)
    assert len(submitted) == len(set(submitted)) == 16
    assert "re-attached" in caplog.text or mode == "submit_then_fail"


async def test_a_failing_squeue_never_makes_a_job_died(fresh_expyre_root: Path, state: Path) -> None:
    # every other status command fails, and the died grace is shorter than a job: a job taken
    # for gone whenever squeue fails would be called died
    system = _faulty_system(fresh_expyre_root, state, squeue=True, grace=0.5)
    tag = f"squeue-{uuid.uuid4().hex[:6]}"
    assert await _run_all(system, 10, tag) == [i + 1000 for i in range(10)]
    assert int((state / "squeue").read_text()) >= 2
    async with session_scope() as session:
        statuses = {r.status for r in await session.db.select(name=tag)}
    assert statuses == {JobStatus.SUCCEEDED}


async def test_a_submit_limit_refusal_waits_for_room(fresh_expyre_root: Path, state: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    system = _faulty_system(fresh_expyre_root, state, mode="limit", every=1)
    tag = f"limit-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("WFL_LIMIT_NAME", tag)  # the wrapper counts this test's jobs in the queue
    monkeypatch.setattr("wfl_async.system.submit.LIMIT_BACKOFF", (2.0, 4.0))
    caplog.set_level(logging.INFO, logger="wfl_async")
    jobs = [RemoteJob(operator.add, (i, 1), sys_name=system, job_name=tag, resources=RESOURCES,
                      check_interval=0.5, hash_ignore=[]) for i in range(8)]
    async with session_scope() as session:
        values = [0] * len(jobs)

        async def one(index: int) -> None:
            values[index] = await jobs[index].prepare(session).result()

        async with anyio.create_task_group() as tg:
            for index in range(len(jobs)):
                tg.start_soon(one, index)
    assert values == [i + 1 for i in range(8)]
    submitted = _submitted(state)
    assert len(submitted) == len(set(submitted)) == 8
    assert "job limit" in caplog.text and "waiting" in caplog.text


_DRIVER = """
import anyio, operator, sys
from wfl_async.job import RemoteJob
from wfl_async.session import session_scope

async def main():
    async with session_scope() as session, anyio.create_task_group() as tg:
        for i in range(3):
            job = RemoteJob(operator.add, (i, 1000), sys_name=sys.argv[1], job_name=f"{sys.argv[2]}-{i}",
                            resources={"num_nodes": 1, "max_time": "10m"}, check_interval=0.5)
            tg.start_soon(job.prepare(session).result)

anyio.run(main)
"""


@pytest.mark.parametrize("mode", ["hang", "submit_then_hang"])
async def test_a_driver_killed_during_sbatch_leaves_no_wedged_lock_and_no_duplicate(
        fresh_expyre_root: Path, state: Path, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    system = _faulty_system(fresh_expyre_root, state, mode=mode, every=1)
    tag = f"killed-{mode}-{uuid.uuid4().hex[:6]}"
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, system, tag],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        while not (state / "hung").exists():
            await anyio.sleep(0.2)  # the batch's first job is inside sbatch (which "hangs") when the driver dies
    finally:
        driver.kill()
        driver.wait()
    for pid in (state / "hung").read_text().split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    (state / "mode").write_text("none")
    caplog.set_level(logging.INFO, logger="wfl_async")
    # the rerun resolves each lock: the job found in the queue (submit_then_hang) or submitted
    values = await _run_all(system, 3, tag)
    assert values == [i + 1000 for i in range(3)]
    submitted = _submitted(state)
    assert len(submitted) == len(set(submitted)) == 3
    if mode == "submit_then_hang":  # found in the queue, or already run by the time the rerun looks
        assert ("an earlier submission had queued it" in caplog.text
                or "an earlier submission ran it" in caplog.text), caplog.text
    else:
        assert "did not queue it; submitting again" in caplog.text


async def test_a_deleted_jobs_database_loses_no_finished_work_and_submits_nothing_again(
        fresh_expyre_root: Path, state: Path) -> None:
    system = _faulty_system(fresh_expyre_root, state, mode="none")
    tag = f"nodb-{uuid.uuid4().hex[:6]}"
    assert await _run_all(system, 5, tag) == [i + 1000 for i in range(5)]
    for path in fresh_expyre_root.glob("wfl_async_jobs.db*"):
        path.unlink()
    # the remote job directories are the truth: each job's kept submit answer re-attaches it
    assert await _run_all(system, 5, tag) == [i + 1000 for i in range(5)]
    submitted = _submitted(state)
    assert len(submitted) == len(set(submitted)) == 5
