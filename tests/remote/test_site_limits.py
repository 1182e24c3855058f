"""Site limits (issue 9 items 3 and 5) on the real schedulers.

* ``max_queued_jobs``: the scheduler's own listing, sampled while a call runs, never holds more
  of the call's jobs (queued, held or running) than the window allows; the rest wait locally
  and are counted as waiting.
* The scheduler rate limit: a wrapper in front of the real ``squeue``/``sbatch`` logs each
  call; no stretch of the run has more calls than the bucket allows.
* A fetch in flight does not hold up the next poll.
* Each poll is due an interval after the previous one started (an overrunning poll is followed at
  once), and takes every job whose final marker was there when it started.
"""

from __future__ import annotations

import json
import operator
import os
import shlex
import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from tests.helpers.faulty_scheduler import faulty_system
from tests.helpers.remote_functions import sleep_then_return
from wfl_async.bench import MTIME_RESOLUTION
from wfl_async.config import load_config
from wfl_async.job import RemoteJob
from wfl_async.jobs import layout
from wfl_async.jobs.states import ACTIVE_STATES, Marker, Phase
from wfl_async.scheduler import get_scheduler
from wfl_async.session import session_scope
from wfl_async.system import System, Watch
from wfl_async.system.paths import project_key
from wfl_async.transport.local import LocalTransport

pytestmark = pytest.mark.remote

WINDOW = 3
JOBS = 8


def _add_system(root: Path, base: str, name: str, **changes: object) -> str:
    """A copy of system ``base`` in the test's own config.json, called ``name``, with ``changes``."""
    config = json.loads((root / "config.json").read_text())
    config["systems"][name] = {**config["systems"][base], **changes}
    (root / "config.json").write_text(json.dumps(config, indent=1))
    return name


@pytest.mark.parametrize("base", ["slurm", "sge"])
async def test_max_queued_jobs_is_never_exceeded_in_the_schedulers_listing(base: str,
                                                                           fresh_expyre_root: Path) -> None:
    name = _add_system(fresh_expyre_root, base, f"{base}_window", max_queued_jobs=WINDOW)
    tag = uuid.uuid4().hex[:6]
    samples: list[set[str]] = []
    waiting_seen: list[int] = []
    async with session_scope() as session:
        system = session.system(name)
        listing = f"{system.scheduler_prefix()}{system.scheduler.status_command()}"
        jobs = [RemoteJob(sleep_then_return, (1.0, i), sys_name=name, job_name=f"window {tag} {i}",
                          resources={"num_nodes": 1, "max_time": "10m"}, check_interval=0.3) for i in range(JOBS)]
        values: list[object] = [None] * JOBS
        done = anyio.Event()

        async def sample() -> None:
            while not done.is_set():
                answer = await system.transport.run(listing, kind="other")
                states = system.scheduler.parse_status_output(answer.stdout.decode())
                samples.append({i for i, s in states.items() if s in ACTIVE_STATES})
                waiting_seen.append(system.waiting_count())
                await anyio.sleep(0.2)

        async def one(i: int) -> None:
            values[i] = await jobs[i].prepare(session).result()

        with anyio.fail_after(600):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sample)
                async with anyio.create_task_group() as calls:
                    for i in range(JOBS):
                        calls.start_soon(one, i)
                done.set()
        records = await session.db.select(name=f" {tag} ")
        ours = {r.remote_id for r in records if r.remote_id}
        peak = system.window.peak
    assert values == list(range(JOBS))
    assert len(ours) == JOBS
    counts = [len(s & ours) for s in samples]
    assert max(counts) <= WINDOW, counts
    assert max(counts) >= 1, counts  # the sampler did see the jobs queued
    assert peak <= WINDOW
    assert max(waiting_seen) > 0, waiting_seen  # jobs were held back locally meanwhile


_LOGGING_WRAPPER = """#!/bin/sh
date +%s.%N >> {log}
PATH=$(printf '%s' "$PATH" | sed "s#{bin}:##")
exec {program} "$@"
"""


async def test_scheduler_calls_keep_to_the_rate_limit(fresh_expyre_root: Path, tmp_path: Path) -> None:
    rate, burst = 2.0, 3
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for program in ("squeue", "sbatch"):
        (bin_dir / program).write_text(_LOGGING_WRAPPER.format(log=shlex.quote(str(log)), bin=bin_dir,
                                                               program=program))
        (bin_dir / program).chmod(0o755)
    entry = json.loads((fresh_expyre_root / "config.json").read_text())["systems"]["slurm"]
    name = _add_system(fresh_expyre_root, "slurm", "slurm_rate", scheduler_rate=rate, scheduler_burst=burst,
                       pre_submit_cmds=[f"export PATH={bin_dir}:$PATH", *entry.get("pre_submit_cmds", [])])
    tag = uuid.uuid4().hex[:6]
    async with session_scope() as session:
        jobs = [RemoteJob(operator.add, (i, 1), sys_name=name, job_name=f"rate {tag} {i}",
                          resources={"num_nodes": 1, "max_time": "10m"}, check_interval=0.2) for i in range(4)]
        with anyio.fail_after(300):
            values = [await job.prepare(session).result() for job in jobs]  # one after another: many calls
    assert values == [1, 2, 3, 4]
    calls = sorted(float(t) for t in log.read_text().split())
    assert len(calls) > 2 * burst, calls  # enough calls for the limit to matter
    # in any stretch of t seconds, at most burst + rate * t calls (a little slack for the clock)
    for i, start in enumerate(calls):
        for j in range(i + 1, len(calls)):
            assert j - i + 1 <= burst + rate * (calls[j] - start) + 1, (i, j, calls)


class _HeldFetches(LocalTransport):
    """The local transport, with every fetch held until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.fetching = anyio.Event()

    async def download(self, remote_root: str, relpaths: Sequence[str], local_root: Path) -> set[str]:
        self.fetching.set()
        await self.release.wait()
        return await super().download(remote_root, relpaths, local_root)


async def test_a_fetch_in_flight_does_not_hold_up_the_next_poll(fresh_expyre_root: Path, tmp_path: Path) -> None:
    from tests.remote.test_bounded_commands import finished_jobs

    config = load_config().system("local")
    transport = _HeldFetches()
    system = System(config, transport, get_scheduler("local"), project_key(tmp_path / "stage"))
    tag = f"held-fetch-{uuid.uuid4().hex[:6]}"
    stage = tmp_path / "stage"
    outcomes: dict[str, Marker | None] = {}
    async with anyio.create_task_group() as tg:
        await tg.start(system.serve)

        async def watch_finished(name: str) -> Watch:
            root = await finished_jobs(system, 1, name)
            watch = Watch(job_dir=f"{name}-0", remote_id="1.1", fetch=[], local_root=stage, check_interval=0.2,
                          remote_root=root)

            async def wait() -> None:
                outcomes[name] = (await system.wait(watch)).marker

            tg.start_soon(wait)
            return watch

        with anyio.fail_after(60):
            first = await watch_finished(f"{tag}-a")
            await transport.fetching.wait()
            # the first job's fetch is held; a job finishing meanwhile is still seen by the next polls
            second = await watch_finished(f"{tag}-b")
            while second.phase is not Phase.FETCHING:
                await anyio.sleep(0.05)
            assert not outcomes
            transport.release.set()
            while len(outcomes) < 2:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert outcomes == {f"{tag}-a": Marker.SUCCEEDED, f"{tag}-b": Marker.SUCCEEDED}
    await system.remove_dirs([first.job_dir, second.job_dir], first.remote_root)


@pytest.mark.parametrize("base", ["slurm", "sge", "pbs"])
async def test_each_poll_is_due_from_the_previous_start_and_takes_every_job_finished_before_it(
        base: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    # The status program answers 0.8 s late, so every poll that lists the queue takes longer than
    # the 0.5 s interval. From the poll loop's own records (System.poll_history) and the final
    # markers' mtimes on the cluster (this machine, same clock):
    # * a poll that overran its interval is followed at once, not an interval after its end;
    # * every job is taken (found finished) by the first poll that started after its final marker.
    state = tmp_path / "faults"
    state.mkdir()
    name = faulty_system(fresh_expyre_root, state, base, mode="none", status_delay=0.8)
    tag = uuid.uuid4().hex[:6]
    async with session_scope() as session:
        system = session.system(name)
        jobs = [RemoteJob(sleep_then_return, (1.5 + 0.5 * i, i), sys_name=name, job_name=f"due {tag} {i}",
                          resources={"num_nodes": 1, "max_time": "10m"}, check_interval=0.5) for i in range(6)]
        prepared = [job.prepare(session) for job in jobs]
        values: list[object] = [None] * len(jobs)

        async def one(i: int) -> None:
            values[i] = await prepared[i].result()

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                for i in range(len(jobs)):
                    tg.start_soon(one, i)
        root = await system.remote_root()
        history = system.poll_history()
    assert values == list(range(len(jobs)))
    overran = [(a, b) for a, b in zip(history, history[1:], strict=False) if a.duration > a.interval]
    assert overran, history  # the late listing made polls overrun
    for a, b in overran:
        assert b.started - a.started < a.duration + a.interval, (a, b)
    taken = {job_dir: index for index, record in enumerate(history) for job_dir in record.finished}
    watched = {d: at for record in history for d, at in record.finished.items()}
    for job in prepared:
        # (no poll can look for a job before the loop has its watch)
        finished_at = max(os.stat(f"{root}/{job.job_dir}/{layout.SUCCEEDED}").st_mtime, watched[job.job_dir])
        # (the last jobs may be taken by a poll whose command reached the cluster just after them)
        first_after = next((i for i, record in enumerate(history) if record.started > finished_at + MTIME_RESOLUTION),
                           len(history))
        assert taken[job.job_dir] <= first_after, (job.job_dir, finished_at, history[taken[job.job_dir]:first_after + 1])
