"""A transient submission failure that never clears is retried a bounded number of times, with a
WARNING that says what and why, then fails the job (issue 15): a fault nobody recognised never
hangs a run. The real ``sbatch`` behind a wrapper that always answers Slurm's own timeout."""

from __future__ import annotations

import logging
import operator
import uuid
from pathlib import Path

import anyio
import pytest

from tests.helpers.faulty_scheduler import faulty_system, submitted
from wfl_async.errors import SchedulerError
from wfl_async.job import RemoteJob
from wfl_async.session import session_scope
from wfl_async.system import submit, submit_loop

pytestmark = pytest.mark.remote

RETRIES = 4


async def test_a_submission_failing_transiently_for_ever_is_retried_a_bounded_number_of_times_then_fails(
        fresh_expyre_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(submit_loop, "MAX_TRANSIENT_RETRIES", RETRIES)  # 20 in real life: about 15 minutes
    monkeypatch.setattr(submit, "TRANSIENT_BACKOFF", (0.1, 0.4))
    state = tmp_path / "faults"
    state.mkdir()
    system = faulty_system(fresh_expyre_root, state, "slurm", mode="fail", every=1)
    caplog.set_level(logging.INFO, logger="wfl_async")
    jobs = [RemoteJob(operator.add, (i, 1), sys_name=system, job_name=f"stuck-{uuid.uuid4().hex[:6]}-{i}",
                      resources={"num_nodes": 1, "max_time": "10m"}) for i in range(3)]
    errors: list[BaseException] = []
    async with session_scope() as session:
        async def one(job: RemoteJob) -> None:
            try:
                await job.prepare(session).result()
            except SchedulerError as exc:
                errors.append(exc)

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for job in jobs:
                    tg.start_soon(one, job)
    assert len(errors) == 3
    assert all(f"failed {RETRIES} times in a row" in str(e) and "Socket timed out" in str(e) for e in errors)
    assert all("wfl-async doctor" in str(e) for e in errors)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "could not take it now" in r.message]
    assert warnings and all("retry" in r.message and "Socket timed out" in r.message for r in warnings)
    assert "retry 3 of 4" in warnings[0].message
    assert submitted(state) == []  # the wrapper never let one through
