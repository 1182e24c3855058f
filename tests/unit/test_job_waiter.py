"""JobWaiter (issue 16): many jobs waited for with no task per waiting job, and nothing of a finished
job left in the driver once its result is delivered.

Real jobs on the built-in ``local`` system (subprocesses, no daemon), a few seconds each test.
"""

from __future__ import annotations

import gc
import operator
import time
import weakref
from pathlib import Path
from typing import Any

import anyio

from wfl_async.errors import JobTimeoutError
from wfl_async.job import JobWaiter, PreparedJob, RemoteJob
from wfl_async.session import Session, session_scope

RESOURCES = {"num_cores": 1, "max_time": "5m"}


async def _run_all(session: Session, jobs: list[PreparedJob], alive: list[weakref.ref[PreparedJob]],
                   ) -> dict[int, tuple[Any, BaseException | None]]:
    """Every job's end by its index, through one waiter (the caller keeps no job). Once all are
    delivered, while the waiter still serves: no job is alive, none is waited for or watched."""
    ended: dict[int, tuple[Any, BaseException | None]] = {}
    count = len(jobs)
    all_in = anyio.Event()

    async def arrived(index: int, value: Any, error: BaseException | None) -> None:
        ended[index] = (value, error)
        if len(ended) == count:
            all_in.set()

    waiter = JobWaiter(arrived)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(waiter.serve)
            for index in range(count):
                waiter.add(jobs.pop(0), index)
            await all_in.wait()
            await anyio.sleep(0.1)  # the last delivering task ends
            gc.collect()
            assert [ref() for ref in alive] == [None] * count
            assert waiter.waiting_count() == 0
            with anyio.fail_after(5):  # an abandoned (timed out) watch is dropped by the loop's next pass
                while session.system("local").watched_count():
                    await anyio.sleep(0.05)
            tasks.cancel_scope.cancel()
    return ended


async def test_a_finished_jobs_state_leaves_the_driver_once_its_result_is_delivered(fresh_expyre_root: Path) -> None:
    async with session_scope() as session:
        options = RemoteJob(operator.add, resources=RESOURCES, partial_node=True, check_interval=0.2, pack={"workers": 1}).options
        jobs = [RemoteJob(operator.add, (i, 100), sys_name="local", job_name=f"waiter_chunk_{i}",
                          options=options).prepare(session) for i in range(4)]
        # the session is open and the waiter serving: neither the system's loops, the packing
        # coordinator nor the waiter keeps a delivered job
        ended = await _run_all(session, jobs, [weakref.ref(job) for job in jobs])
        assert ended == {i: (i + 100, None) for i in range(4)}


async def test_a_job_not_ended_by_its_timeout_is_delivered_as_timed_out_and_forgotten(fresh_expyre_root: Path) -> None:
    async with session_scope() as session:
        job = RemoteJob(time.sleep, (3,), sys_name="local", job_name="waiter_sleeps", resources=RESOURCES, partial_node=True,
                        check_interval=0.2, timeout=0.5, pack=False).prepare(session)
        jobs, alive = [job], [weakref.ref(job)]
        del job
        ended = await _run_all(session, jobs, alive)
        (value, error), = ended.values()
        # at its deadline, 0.5 s after it was queued: the job itself sleeps 3 s (it would give None)
        assert isinstance(error, JobTimeoutError) and "not seen to end within 0.5 s" in str(error)


async def test_a_nearer_deadline_wakes_a_waiter_sleeping_until_a_far_one(fresh_expyre_root: Path) -> None:
    """The timeout task sleeps until the nearest deadline: a job added later with a nearer one is still
    timed out at its own deadline."""
    async with session_scope() as session:
        def sleeper(name: str, timeout: float) -> PreparedJob:
            return RemoteJob(time.sleep, (3,), sys_name="local", job_name=name, resources=RESOURCES, partial_node=True,
                             check_interval=0.2, timeout=timeout, pack=False).prepare(session)

        order: list[tuple[str, BaseException | None, float]] = []
        both_in = anyio.Event()

        async def arrived(name: str, value: Any, error: BaseException | None) -> None:
            order.append((name, error, anyio.current_time()))
            if len(order) == 2:
                both_in.set()

        waiter = JobWaiter(arrived)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(waiter.serve)
                waiter.add(sleeper("waiter_far", 3600), "far")
                while not waiter.waiting_count():  # its far deadline is the timeout task's next wake-up
                    await anyio.sleep(0.05)
                queued_at = anyio.current_time()
                waiter.add(sleeper("waiter_near", 0.5), "near")
                await both_in.wait()
                tasks.cancel_scope.cancel()
        (first, error, timed_out_at), (second, far_error, _) = order
        # timed out at its own deadline (0.5 s after it was queued), long before the jobs' 3 s: had the
        # timeout task slept until the far deadline, the near job would have ended with its value
        assert first == "near" and isinstance(error, JobTimeoutError), order
        assert timed_out_at - queued_at < 2.5
        assert second == "far" and far_error is None
