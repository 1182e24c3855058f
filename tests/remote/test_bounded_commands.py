"""Any number of jobs, bounded commands (issue 9 item 4), on the real daemons.

* Thousands of held Slurm jobs in flight: more than the old poll command could name (about
  2,100 job directories on one command line) and more than it looked at (3,000): every job is
  watched and listed, every command stays short, later polls look at only what changed, and
  cancelling them all is a few bounded commands.
* Re-attaching to 2,000 finished jobs whose local results are gone (the driver killed before it
  fetched): every result comes back, in fetches of bounded size.

The longest command is measured by the transport itself (``TransportStats.longest_command``).
``benchmarks/bounded_commands.py`` runs the same with 10,000 jobs.
"""

from __future__ import annotations

import json
import operator
import pickle
import shlex
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import pytest

from wfl_async.job import RemoteJob
from wfl_async.jobs import layout
from wfl_async.jobs.states import Marker, QueueState
from wfl_async.session import session_scope
from wfl_async.system import System, Watch
from wfl_async.transport.base import FETCH_PATHS, MAX_COMMAND_BYTES

pytestmark = pytest.mark.remote

POLL_COMMAND_BOUND = 4096
"""Bytes: a poll command names no job, so it is this short whatever the number of jobs."""
HELD_JOBS = 3100
FINISHED_JOBS = 2000
_GONE_ID = {"slurm": "4000000000", "local": "1.1"}
"""A remote id no scheduler lists: the jobs of the re-attach test left the queue long ago."""


async def held_jobs_in_flight(system_name: str, n: int, tag: str) -> dict[str, int]:
    """Submit ``n`` held jobs, wait until all are watched and listed, cancel them; return what it cost."""
    async with session_scope() as session:
        system = session.system(system_name)
        jobs = [RemoteJob(operator.add, (i, 1), sys_name=system_name, job_name=f"held {tag} {i}",
                          resources={"num_nodes": 1, "max_time": "10m"}, header_extra=["#SBATCH --hold"],
                          check_interval=0.5) for i in range(n)]
        prepared = [job.prepare(session) for job in jobs]
        async with anyio.create_task_group() as tg:
            for p in prepared:
                tg.start_soon(p.result)
            with anyio.fail_after(900):
                while system.watched_count() < n or system.stats["marker_scans"] < n:
                    await anyio.sleep(0.5)
                # every job listed once since (each listed active, its markers scanned: settled); a
                # job submitted last, not yet in a listing, is looked at every poll until it is
                listings = system.stats["queue_listings"]
                while system.stats["queue_listings"] < listings + 2:
                    await anyio.sleep(0.2)
                scans, polls = system.stats["marker_scans"], system.stats["poll_commands"]
                while system.stats["poll_commands"] < polls + 3:
                    await anyio.sleep(0.2)
            later_scans = system.stats["marker_scans"] - scans
            tg.cancel_scope.cancel()
        records = await session.db.select(name=f" {tag} ")
        ids = [r.remote_id for r in records if r.remote_id]
        states = await system.queue_states()
        held = sum(1 for i in ids if states.get(i) is QueueState.HELD)
        before = len(system.transport.stats.records)
        await system.control("cancel", ids)
        cancel_commands = len(system.transport.stats.records) - before
        await system.remove_dirs([p.job_dir for p in prepared])
        return {"ids": len(set(ids)), "held": held, "later_scans": later_scans, "cancel_commands": cancel_commands,
                "longest": system.transport.stats.longest_command(),
                "longest_poll": _longest(system, "poll"), "watched": system.watched_count()}


def _longest(system: System, kind: str) -> int:
    return max((r.command_bytes for r in system.transport.stats.records if r.kind == kind), default=0)


@pytest.fixture
def held_tag() -> Iterator[str]:
    """A tag for the held jobs' names; whatever of them a stopped run (a timeout) left queued is
    cancelled after the test, or every later test of the machine would list 3,100 held jobs."""
    tag = uuid.uuid4().hex[:6]
    yield tag
    listing = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=120).stdout
    rows = (line.partition(" ") for line in listing.splitlines())
    left = [job_id for job_id, _, name in rows if name.startswith(f"held_{tag}_")]
    for start in range(0, len(left), 500):
        subprocess.run(["scancel", *left[start:start + 500]], timeout=120, check=False)


@pytest.mark.serial  # 3,100 held jobs in the user's Slurm queue: every other Slurm/PBS test would list them
async def test_thousands_of_held_jobs_are_watched_with_short_commands(fresh_expyre_root: Path, held_tag: str) -> None:
    run = await held_jobs_in_flight("slurm", HELD_JOBS, held_tag)
    assert run["ids"] == HELD_JOBS, run
    # the scheduler's own listing has every one of them, held
    assert run["held"] == HELD_JOBS, run
    # after the first look at every directory, a poll looks only at what changed (nothing here)
    assert run["later_scans"] < HELD_JOBS // 10, run
    assert run["longest_poll"] < POLL_COMMAND_BOUND, run
    assert run["longest"] <= MAX_COMMAND_BYTES, run
    assert run["cancel_commands"] == -(-HELD_JOBS // 500), run


# ---------------------------------------------------------------------- re-attach to finished jobs
_MAKE_FINISHED = """
import operator, os, pickle, sys
from wfl_async.jobs import layout, worker
root, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.fsync = lambda fd: None  # set-up speed: durability on power loss is not what is tested here
for i in range(n):
    job_dir = os.path.join(root, f"{tag}-{i}")
    os.makedirs(job_dir)
    with open(os.path.join(job_dir, layout.TASK), "wb") as handle:
        pickle.dump((operator.add, (i, 1), {}), handle)
    worker.main(job_dir)
"""


async def finished_jobs(system: System, n: int, tag: str) -> str:
    """``n`` job directories that ran to the end (the real worker, one process for all); their root."""
    root = await system.remote_root()
    setup = "; ".join(system.config.commands)
    await system.transport.run(f"{setup}; {shlex.quote(system.config.python)} - {shlex.quote(root)} {n} "
                               f"{shlex.quote(tag)}", stdin=_MAKE_FINISHED.encode(), kind="other")
    return root


async def reattach(system_name: str, n: int, local_root: Path) -> tuple[list[object], System]:
    tag = f"reattach-{uuid.uuid4().hex[:6]}"
    async with session_scope() as session:
        system = await session.serving(system_name)
        root = await finished_jobs(system, n, tag)
        gone = _GONE_ID.get(system.scheduler.name, _GONE_ID["slurm"])
        watches = [Watch(job_dir=f"{tag}-{i}", remote_id=gone, fetch=[], local_root=local_root, check_interval=0.5,
                         remote_root=root) for i in range(n)]
        outcomes: list[Marker | None] = [None] * n

        async def one(i: int) -> None:
            outcomes[i] = (await system.wait(watches[i])).marker

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
        assert outcomes == [Marker.SUCCEEDED] * n
        values = [pickle.loads((local_root / w.job_dir / layout.RESULT).read_bytes())[1] for w in watches]
        await system.remove_dirs([w.job_dir for w in watches])
    return values, system


@pytest.mark.parametrize("system_name", ["slurm", "local_ssh"])
async def test_reattach_to_thousands_of_finished_jobs_fetches_in_bounded_commands(
        system_name: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    values, system = await reattach(system_name, FINISHED_JOBS, tmp_path / "stage")
    assert values == [i + 1 for i in range(FINISHED_JOBS)]
    fetches = [r for r in system.transport.stats.records if r.kind == "fetch"]
    # 4 files a job (result, worker log, two possible markers): split, never one huge command
    assert len(fetches) >= FINISHED_JOBS * 4 // FETCH_PATHS, _summary(fetches)
    assert _longest(system, "fetch") < POLL_COMMAND_BOUND, _summary(fetches)
    assert _longest(system, "poll") < POLL_COMMAND_BOUND
    assert system.transport.stats.longest_command() <= MAX_COMMAND_BYTES


def _summary(records: Sequence[object]) -> str:
    return json.dumps([getattr(r, "__dict__", str(r)) for r in records], default=str)[:2000]
