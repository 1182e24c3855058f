"""The driver's flow at scale (issue 16): results never wait behind the jobs database or the rest of
the call's staging, and a rerun of a finished packed call re-attaches with a few commands, submitting nothing."""

from __future__ import annotations

import operator
import re
import shutil
import uuid
from typing import Any

import anyio
import pytest

from tests.conftest import remote_system_names
from tests.helpers.processes import hold_sqlite_write_lock
from wfl_async.job import PreparedJob, RemoteJob
from wfl_async.jobs.database import JobsDatabase
from wfl_async.session import Session, session_scope

pytestmark = pytest.mark.remote

PACKING_SYSTEMS = re.compile(r"^slurm(_ssh)?$")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pack_system" in metafunc.fixturenames:
        names = [n for n in remote_system_names() if PACKING_SYSTEMS.match(n)] \
            if metafunc.config.getoption("--runremote") else ["slurm"]
        metafunc.parametrize("pack_system", names)


def chunk(session: Session, system: str, call: str, index: int) -> PreparedJob:
    options: dict[str, Any] = {"resources": {"num_cores": 1, "max_time": "10m"}, "partial_node": True,
                               "check_interval": 0.3, "pack": {"workers": 2, "idle_seconds": 2}}
    return RemoteJob(operator.add, (index, 1000), sys_name=system, job_name=f"{call}_chunk_{index}",
                     **options).prepare(session)


async def test_a_result_reaches_the_caller_while_the_jobs_database_is_locked_and_the_rest_waits_to_be_claimed(
        pack_system: str, fresh_expyre_root: Any) -> None:
    """Another process holds the jobs database's write lock from the moment the first chunk is watched:
    its result must still reach the caller (the fetch records it without waiting for the writer),
    while the chunks started after it cannot even be claimed yet (the rest of the call is held up)."""
    call = f"flow-{uuid.uuid4().hex[:6]}"
    async with session_scope() as session:
        system = session.system(pack_system)
        first = chunk(session, pack_system, call, 0)
        got: dict[int, int] = {}
        first_came = anyio.Event()

        async def run(index: int, job: PreparedJob) -> None:
            got[index] = await job.result()
            if index == 0:
                first_came.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run, 0, first)
            with anyio.fail_after(120):
                while system.watched_count() < 1:
                    await anyio.sleep(0.05)
            holder = await anyio.to_thread.run_sync(hold_sqlite_write_lock, session.db.path, 120.0)
            try:
                rest = [chunk(session, pack_system, call, i) for i in range(1, 4)]
                for index, job in enumerate(rest, start=1):
                    tasks.start_soon(run, index, job)
                with anyio.fail_after(90):
                    await first_came.wait()
                assert got == {0: 1000}, got  # the rest could not be claimed: nothing of theirs ran
                async with JobsDatabase(session.db.path, readonly=True) as db:  # reads go on beside the lock
                    assert {r.name for r in await db.select()} == {first.spec.job_name}
            finally:
                holder.kill()
                await anyio.to_thread.run_sync(holder.wait)
        assert got == {i: 1000 + i for i in range(4)}


async def test_a_rerun_of_a_finished_packed_call_without_its_local_results_fetches_with_a_few_commands(
        pack_system: str, fresh_expyre_root: Any) -> None:
    """The local stage directory removed (only the jobs database left): the rerun re-attaches to every
    chunk and fetches, submitting and queueing nothing, in a number of commands that does not grow
    with the chunks (fetches of up to FETCH_PATHS files each, and no survey of their markers first:
    their records say they succeeded)."""
    call, n = f"rerun-{uuid.uuid4().hex[:6]}", 40
    async with session_scope() as session:
        jobs = [chunk(session, pack_system, call, i) for i in range(n)]
        with anyio.fail_after(300):
            assert await _results(jobs) == [1000 + i for i in range(n)]
        stage = session.stage_root
    shutil.rmtree(stage)
    async with session_scope() as session:  # (it makes the stage directory afresh)
        system = session.system(pack_system)
        before = len(system.transport.stats.records)
        jobs = [chunk(session, pack_system, call, i) for i in range(n)]
        with anyio.fail_after(120):
            assert await _results(jobs) == [1000 + i for i in range(n)]
        kinds = [r.kind for r in system.transport.stats.records[before:]]
        pack = session.packing(pack_system).stats
        assert "submit" not in kinds and pack["enqueue_commands"] == 0 and pack["workers_submitted"] == 0, (kinds, pack)
        assert kinds.count("fetch") <= 3 and len(kinds) <= 10, kinds  # as the claims come: a fetch each
        # their records say they succeeded: fetched at once (the fetch checks each final marker), no survey
        assert "poll" not in kinds, kinds


async def _results(jobs: list[PreparedJob]) -> list[Any]:
    values: list[Any] = [None] * len(jobs)

    async def one(index: int, job: PreparedJob) -> None:
        values[index] = await job.result()

    async with anyio.create_task_group() as tasks:
        for index, job in enumerate(jobs):
            tasks.start_soon(one, index, job)
    return values
