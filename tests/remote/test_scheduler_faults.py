"""A cluster's ordinary bad day, injected into the real Slurm, SGE and PBS-style commands.

Flaky submission, lost answers, a failing status command, a job-limit refusal. Each fault is
a wrapper program put first on a test-owned system's PATH (see tests/helpers/faulty_scheduler.py),
in front of the real ``sbatch``/``qsub``/``squeue``/``qstat``. The first-submission check
(wfl-async doctor) runs as for a user: it retries a transiently failing status command too.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import anyio
import pytest

from tests.helpers import remote_functions as rf
from tests.helpers.faulty_scheduler import FLAVOURS, accounted, faulty_system, status_calls, submitted
from tests.helpers.processes import ancestor, comm
from wfl_async.job import RemoteJob
from wfl_async.jobs.states import JobStatus
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote


RESOURCES = {"num_nodes": 1, "max_time": "10m"}
SCHEDULERS = pytest.mark.parametrize("scheduler", ["slurm", "sge", "pbs"])
FLAKY_JOBS = {"slurm": 200, "sge": 12, "pbs": 12}
"""The issue's 200-chunk call on Slurm; a dozen jobs show the same handling on the others."""


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


@SCHEDULERS
async def test_submit_timing_out_one_call_in_four_never_fails_a_job(
        fresh_expyre_root: Path, state: Path, scheduler: str, caplog: pytest.LogCaptureFixture) -> None:
    system = faulty_system(fresh_expyre_root, state, scheduler, mode="fail", every=4)
    caplog.set_level(logging.INFO, logger="wfl_async")
    tag = f"flaky-{uuid.uuid4().hex[:6]}"
    n = FLAKY_JOBS[scheduler]
    assert await _run_all(system, n, tag) == [i + 1000 for i in range(n)]
    jobs = submitted(state)
    assert len(jobs) == len(set(jobs)) == n  # every job once, none twice
    assert int((state / "count").read_text()) > n  # the fault did happen
    complaint = FLAVOURS[scheduler].submit_timeout.splitlines()[-1].split("(")[0].strip()
    assert "could not take it now" in caplog.text and complaint in caplog.text


# an id printed before the error is read alike for every scheduler (shown on slurm); a dropped
# answer is resolved by the queue's working directories (slurm, sge) or the job's marker (pbs)
@pytest.mark.parametrize("scheduler,mode", [("slurm", "submit_then_fail"), ("slurm", "submit_and_drop"),
                                            ("sge", "submit_and_drop"), ("pbs", "submit_and_drop")])
async def test_submit_that_queues_the_job_and_then_fails_gives_no_duplicate(
        fresh_expyre_root: Path, state: Path, scheduler: str, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    system = faulty_system(fresh_expyre_root, state, scheduler, mode=mode, every=2)
    caplog.set_level(logging.INFO, logger="wfl_async")
    tag = f"lost-{uuid.uuid4().hex[:6]}"
    n = 16 if scheduler == "slurm" else 6
    assert await _run_all(system, n, tag) == [i + 1000 for i in range(n)]
    jobs = submitted(state)
    assert len(jobs) == len(set(jobs)) == n
    assert "re-attached" in caplog.text or mode == "submit_then_fail"


@SCHEDULERS
async def test_a_failing_status_command_never_makes_a_job_died(fresh_expyre_root: Path, state: Path,
                                                               scheduler: str) -> None:
    # every other status command fails, and the died grace is shorter than a job: a job taken
    # for gone whenever squeue/qstat fails would be called died
    system = faulty_system(fresh_expyre_root, state, scheduler, status_fails="[ $((n % 2)) -eq 1 ]", grace=0.5)
    tag = f"status-{uuid.uuid4().hex[:6]}"
    assert await _run_all(system, 6, tag) == [i + 1000 for i in range(6)]
    assert status_calls(state) >= 4
    async with session_scope() as session:
        statuses = {r.status for r in await session.db.select(name=tag)}
    assert statuses == {JobStatus.SUCCEEDED}


@SCHEDULERS
async def test_a_submit_limit_refusal_waits_for_room(fresh_expyre_root: Path, state: Path, scheduler: str,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    # the wrapper refuses while 3 of the jobs it submitted have no final marker
    system = faulty_system(fresh_expyre_root, state, scheduler, mode="limit", every=1)
    tag = f"limit-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr("wfl_async.system.submit.LIMIT_BACKOFF", (2.0, 4.0))
    caplog.set_level(logging.INFO, logger="wfl_async")
    # each job lasts a second, so that 3 are in the queue at once even where jobs start at once (sge)
    jobs = [RemoteJob(rf.sleep_then_return, (1, i + 1), sys_name=system, job_name=tag, resources=RESOURCES,
                      check_interval=0.5, hash_ignore=[]) for i in range(8)]
    async with session_scope() as session:
        values = [0] * len(jobs)

        async def one(index: int) -> None:
            values[index] = await jobs[index].prepare(session).result()

        async with anyio.create_task_group() as tg:
            for index in range(len(jobs)):
                tg.start_soon(one, index)
    assert values == [i + 1 for i in range(8)]
    jobs = submitted(state)
    assert len(jobs) == len(set(jobs)) == 8
    assert "job limit" in caplog.text and "waiting" in caplog.text


_DRIVER = """
import anyio, operator, sys
from tests.helpers import remote_functions as rf
from tests.helpers.processes import ancestor, comm
from tests.helpers.faulty_scheduler import FLAVOURS, accounted, faulty_system, status_calls, submitted
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
    system = faulty_system(fresh_expyre_root, state, mode=mode, every=1)
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
    jobs = submitted(state)
    assert len(jobs) == len(set(jobs)) == 3
    if mode == "submit_then_hang":  # found in the queue, or already run by the time the rerun looks
        assert ("an earlier submission had queued it" in caplog.text
                or "an earlier submission ran it" in caplog.text), caplog.text
    else:
        assert "did not queue it; submitting again" in caplog.text


@SCHEDULERS
async def test_a_driver_killed_while_a_slow_submission_goes_on_then_an_immediate_rerun_submits_each_job_once(
        fresh_expyre_root: Path, state: Path, scheduler: str, caplog: pytest.LogCaptureFixture) -> None:
    """The driver killed (kill -9) while ``sbatch``/``qsub`` is still working on the login node (the
    wrapper waits SLOW_SUBMIT_SECONDS before really submitting): the rerun, started at once, finds
    the lock held by that live process and waits for its answer instead of submitting again."""
    system = faulty_system(fresh_expyre_root, state, scheduler, mode="slow", every=1)
    tag = f"slow{scheduler}{uuid.uuid4().hex[:6]}"
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, system, tag],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        while not (state / "slow").exists():
            await anyio.sleep(0.1)  # the batch's first job is inside the slow submit program
    finally:
        driver.kill()
        driver.wait()
    slow = [int(pid) for pid in (state / "slow").read_text().split()]
    (state / "mode").write_text("none")
    caplog.set_level(logging.INFO, logger="wfl_async")
    values = await _run_all(system, 3, tag)
    assert values == [i + 1000 for i in range(3)]
    await _assert_each_submitted_once(scheduler, state, [f"{tag}-{i}" for i in range(3)], slow)
    assert "another submission of this job is still running" in caplog.text, caplog.text


@pytest.mark.parametrize("system", ["slurm_ssh", "pbs_ssh"])  # sge: the kill -9 test above
async def test_the_connection_dropped_while_a_slow_submission_goes_on_submits_each_job_once(
        fresh_expyre_root: Path, system: str, caplog: pytest.LogCaptureFixture) -> None:
    """The sshd process serving the driver's connection killed while ``sbatch``/``qsub`` is still
    working on the login node: the driver reconnects and repeats its command, which finds the lock
    held by that live process and waits for its answer instead of submitting again."""
    scheduler = system.removesuffix("_ssh")
    state = Path(tempfile.mkdtemp(prefix="wfl_async_slow_", dir="/tmp"))  # the ssh test user writes here
    try:
        name = faulty_system(fresh_expyre_root, state, scheduler, mode="slow", every=1, base=system)
        for path in [state, *state.rglob("*")]:
            path.chmod(0o1777 if path.is_dir() else 0o755)
        tag = f"drop{scheduler}{uuid.uuid4().hex[:6]}"
        caplog.set_level(logging.INFO, logger="wfl_async")
        dropped: list[int] = []

        async def drop_the_connection_inside_the_submit_program() -> None:
            while not (state / "slow").exists():
                await anyio.sleep(0.05)
            sshd = ancestor(int((state / "slow").read_text().split()[0]), lambda p: comm(p).startswith("sshd"))
            assert sshd is not None
            os.kill(sshd, signal.SIGKILL)
            dropped.append(sshd)
            (state / "mode").write_text("none")  # the other jobs are submitted at once

        async with anyio.create_task_group() as tg:
            tg.start_soon(drop_the_connection_inside_the_submit_program)
            values = await _run_all(name, 3, tag)
        assert dropped and values == [i + 1000 for i in range(3)]
        slow = [int(pid) for pid in (state / "slow").read_text().split()]
        await _assert_each_submitted_once(scheduler, state, [f"{tag}-{i}" for i in range(3)], slow)
        assert "another submission of this job is still running" in caplog.text, caplog.text
    finally:
        shutil.rmtree(state, ignore_errors=True)


async def _assert_each_submitted_once(scheduler: str, state: Path, names: list[str], slow: list[int]) -> None:
    """Each job of ``names`` submitted once: by the wrapper's log and by the scheduler's own accounting."""
    while any(Path(f"/proc/{pid}").exists() for pid in slow):
        await anyio.sleep(0.2)  # a submission the driver did not wait for would come now
    jobs = submitted(state)
    assert len(jobs) == len(set(jobs)) == len(names)
    counts = accounted(scheduler, names)
    for _ in range(50):  # SGE's accounting file is written up to a flush interval after the job ends
        if all(counts.values()):
            break
        await anyio.sleep(0.2)
        counts = accounted(scheduler, names)
    assert counts == dict.fromkeys(names, 1)


async def test_a_deleted_jobs_database_loses_no_finished_work_and_submits_nothing_again(
        fresh_expyre_root: Path, state: Path) -> None:
    system = faulty_system(fresh_expyre_root, state, mode="none")
    tag = f"nodb-{uuid.uuid4().hex[:6]}"
    assert await _run_all(system, 5, tag) == [i + 1000 for i in range(5)]
    for path in fresh_expyre_root.glob("wfl_async_jobs.db*"):
        path.unlink()
    # the remote job directories are the truth: each job's kept submit answer re-attaches it
    assert await _run_all(system, 5, tag) == [i + 1000 for i in range(5)]
    jobs = submitted(state)
    assert len(jobs) == len(set(jobs)) == 5
