"""The cost model on real Slurm, directly and through the test sshd: remote commands do not scale with jobs.

N = 30 and N = 90 jobs of ``operator.add`` through :func:`session_scope` and :class:`RemoteJob`.
For both, the jobs go out in one or two submit commands, the poller runs one
command per poll interval, one fetch per poll at most, and nothing else reaches the system:
``transport.stats.commands_run`` is exactly the sum of what ``system.stats`` counts, plus the
system check before the first submission and the command that finds the remote run directory.
Over ssh, all of it uses one connection.

Needs the test daemons (``scripts/testinfra/start_all.sh``, then
``source /tmp/wfl_async_testinfra/env.sh``). A missing system FAILS these tests; it does not skip.
"""

from __future__ import annotations

import operator
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from wfl_async.config import load_config
from wfl_async.errors import ConfigurationError
from wfl_async.job import RemoteJob
from wfl_async.jobs.database import JobStatus
from wfl_async.session import session_scope
from wfl_async.transport.ssh import SshTransport

START_HINT = ("run scripts/testinfra/start_all.sh (as root) and source /tmp/wfl_async_testinfra/env.sh "
              "so that EXPYRE_ROOT holds the test systems")
CHECK_INTERVAL = 0.5
DEADLINE = 240.0


@dataclass
class Run:
    n: int
    values: list[int]
    stats: dict[str, int]
    commands: int
    connections: int
    wait_seconds: float


async def run_jobs(system_name: str, n: int) -> Run:
    tag = uuid.uuid4().hex[:6]
    jobs = [RemoteJob(operator.add, (i, 1000), sys_name=system_name, job_name=f"batch {n} {tag} {i}",
                      resources={"num_nodes": 1, "max_time": "10m"}, check_interval=CHECK_INTERVAL)
            for i in range(n)]
    values: list[int] = [0] * n
    async with session_scope() as rt:
        try:
            system = rt.system(system_name)
        except ConfigurationError as exc:
            pytest.fail(f"{exc}\n{START_HINT}", pytrace=False)
        prepared = [job.prepare(rt) for job in jobs]
        assert system.transport.stats.commands_run == 0  # preparing costs nothing remote
        start = time.monotonic()

        async def one(i: int) -> None:
            values[i] = await prepared[i].result()

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
        elapsed = time.monotonic() - start
        records = await rt.db.select(name=f" {tag} ")
        assert len(records) == n and {r.status for r in records} == {JobStatus.SUCCEEDED}
        assert len({r.remote_id for r in records}) == n
        run = Run(n, values, dict(system.stats), system.transport.stats.commands_run,
                  system.transport.stats.connections_opened, elapsed)
        await system.remove_dirs([p.job_dir for p in prepared])
    return run


@pytest.mark.parametrize("system_name", ["slurm", "slurm_ssh"])
async def test_remote_commands_do_not_scale_with_the_number_of_jobs(system_name: str,
                                                                    fresh_expyre_root: Path) -> None:
    if system_name not in load_config().systems:
        pytest.fail(f"system {system_name!r} is not configured: {START_HINT}", pytrace=False)
    runs = [await run_jobs(system_name, n) for n in (30, 90)]

    for run in runs:
        assert run.values == [i + 1000 for i in range(run.n)]
        stats = run.stats
        # one submit command per batch, one scheduler call per submit and per poll listing the queue
        # (the other polls read the run's event log and a few markers only)
        assert 1 <= stats["submit_commands"] <= 2, run
        assert 1 <= stats["queue_listings"] <= stats["poll_commands"], run
        assert stats["scheduler_calls"] == stats["submit_commands"] + stats["queue_listings"], run
        # one status command per poll interval, also when a new waiter takes over as poll leader
        intervals = run.wait_seconds / CHECK_INTERVAL
        assert stats["poll_commands"] <= intervals + 1, run
        # finished jobs come back in one stream per poll at most
        assert 1 <= stats["fetch_commands"] <= stats["poll_commands"], run
        # nothing else: no per-job command anywhere (+2: the first-submission system check, and
        # finding the remote run directory)
        assert run.commands == 2 + stats["submit_commands"] + stats["poll_commands"] + stats["fetch_commands"], run
        if system_name.endswith("_ssh"):
            assert run.connections == 1, run

    few, many = runs
    # three times the jobs, not more submit commands: 1 for both when the jobs arrive in one burst;
    # a loaded machine may split a burst in 2 for either N (the batcher stops waiting after a quiet
    # batch_window), so "the same" is asserted above as "1 or 2 for both"
    # three times the jobs: the commands per second of waiting stay the same, they do not triple
    assert many.commands / many.wait_seconds <= 1.5 * few.commands / few.wait_seconds + 2 / CHECK_INTERVAL, runs


def test_ssh_systems_use_the_ssh_transport(fresh_expyre_root: Path) -> None:
    """Guards the test above: slurm_ssh really goes through the sshd."""
    config = load_config()
    if "slurm_ssh" not in config.systems:
        pytest.fail(f"system 'slurm_ssh' is not configured: {START_HINT}", pytrace=False)

    async def main() -> object:
        async with session_scope() as rt:
            return rt.system("slurm_ssh").transport

    assert isinstance(anyio.run(main), SshTransport)
