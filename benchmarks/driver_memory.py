"""The driver's memory per chunk in flight (issue 16): N packed chunks whose worker is held, so every
chunk is claimed, enqueued and watched at once, and none finishes.

On the loopback sshd + Slurm of the test infrastructure (``slurm_ssh``; the worker is held with
``#SBATCH --begin=now+2hours`` and cancelled at the end, so Slurm only)::

    source /tmp/wfl_async_testinfra/env.sh        # or a checkout's env.sh (scripts/testinfra/checkout_env.sh)
    python benchmarks/driver_memory.py --n 10000 --json driver_memory.json
    python benchmarks/driver_memory.py --n 3000 --trace 15      # and the 15 largest allocation sites

For each N (a fresh project each): the jobs are prepared as :func:`wfl_async.bench.bench_system`
prepares them (one options object, chunk names of one call), run through one
:class:`~wfl_async.job.JobWaiter` as a call of autoparallelize runs them (``--tasks``: one task per
job awaiting ``result()``, as before issue 16), and once every chunk is watched the resident memory
over the session's own start is divided by N. ``--trace K`` adds tracemalloc's K largest allocation
sites per chunk (tracemalloc slows the run several times and adds memory of its own: its RSS is not
the figure to quote). What the figures mean: ``docs/benchmark.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import operator
import shlex
import sys
import time
import tracemalloc
from typing import Any

import anyio

from wfl_async.bench import current_rss, fresh_root, merged_raw_config, save_report, trivial_args
from wfl_async.job import JobWaiter, PreparedJob, RemoteJob
from wfl_async.session import Session, session_scope

HOLD = "#SBATCH --begin=now+2hours"
"""Keeps the pack's worker pending: its chunks stay queued and watched."""


def _say(message: str) -> None:
    print(f"[benchmark driver_memory] {message}", file=sys.stderr, flush=True)


async def _hold_all(jobs: list[PreparedJob], tasks: bool) -> None:
    """Run ``jobs`` until cancelled (none finishes: the worker is held)."""
    async def failed(tag: Any, value: Any, error: BaseException | None) -> None:
        _say(f"chunk {tag} ended: {error!r}")

    async def one(job: PreparedJob) -> None:
        try:
            await job.result()
        except Exception as exc:
            _say(f"{job.spec.job_name} ended: {exc!r}")

    async with anyio.create_task_group() as group:
        waiter = JobWaiter(failed)
        if not tasks:
            group.start_soon(waiter.serve)
        while jobs:
            job = jobs.pop()
            if tasks:
                group.start_soon(one, job)
            else:
                waiter.add(job, job.spec.job_name)
        del job


async def _in_flight(session: Session, system: str, n: int, tasks: bool, trace: int) -> dict[str, Any]:
    """N chunks held in flight; the driver's memory once all are watched."""
    tag = f"mem{time.time_ns() % 10**9}"
    options = RemoteJob(operator.add, resources={"num_nodes": 1, "max_time": "30m"}, pack={"workers": 1},
                        header_extra=[HOLD], check_interval=0.5, timeout=3600).options
    gc.collect()
    before, t0 = current_rss() or 0, time.monotonic()
    snapshot = tracemalloc.take_snapshot() if trace else None
    jobs = [RemoteJob(operator.add, trivial_args(i), sys_name=system, job_name=f"{tag}_chunk_{i}",
                      options=options).prepare(session) for i in range(n)]
    watched = session.system(system).watched_count
    figures: dict[str, Any] = {"chunks": n, "held by": "a task per chunk" if tasks else "JobWaiter"}
    async with anyio.create_task_group() as group:
        group.start_soon(_hold_all, jobs, tasks)
        del jobs
        with anyio.fail_after(1800):
            while watched() < n:  # noqa: ASYNC110 (the poll loop's count: nothing to wait on)
                await anyio.sleep(0.5)
        gc.collect()
        after = current_rss() or 0
        figures.update({"seconds to watch all": round(time.monotonic() - t0, 1),
                        "RSS before (MiB)": round(before / 2**20, 1), "RSS in flight (MiB)": round(after / 2**20, 1),
                        "RSS per chunk (B)": round((after - before) / n)})
        if snapshot is not None:
            grown = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
            figures["traced per chunk (B)"] = round(sum(s.size_diff for s in grown) / n)
            figures["largest sites (B per chunk)"] = {str(s.traceback): round(s.size_diff / n) for s in grown[:trace]}
        group.cancel_scope.cancel()
    await _cancel_workers(session, system, tag)
    return figures


async def _cancel_workers(session: Session, system: str, tag: str) -> None:
    """Cancel this run's held worker (its job name carries ``tag``) and remove its remote directory
    (this fresh project's own: 10^5 queued chunks leave as many small files)."""
    machine = session.system(system)
    listing = await machine.transport.run("squeue -h -u \"$USER\" -o '%i %j'", kind="probe")
    ids = [line.split()[0] for line in listing.stdout.decode().splitlines() if tag in line]
    if ids:
        await machine.control("cancel", ids)
    await machine.transport.run(f"rm -rf {shlex.quote(await machine.remote_root())}", kind="cancel")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.trace:
        tracemalloc.start(1)
    rows = []
    for n in args.n or [10000]:
        with fresh_root("wfl_async_bench_memory_", merged_raw_config()):
            async with session_scope() as session:
                session.system(args.system)
                _say(f"{args.system}: {n} chunks held in flight")
                rows.append(await _in_flight(session, args.system, n, args.tasks, args.trace))
        _say(json.dumps(rows[-1]))
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(prog="driver_memory.py", description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="slurm_ssh")
    parser.add_argument("--n", type=int, action="append", help="chunks in flight (repeat for several; default 10000)")
    parser.add_argument("--tasks", action="store_true", help="one task per chunk awaiting result() (before issue 16)")
    parser.add_argument("--trace", type=int, default=0, metavar="K", help="tracemalloc's K largest sites per chunk")
    parser.add_argument("--json", default="driver_memory.json", help="where to write every figure")
    args = parser.parse_args()
    report = anyio.run(run, args)
    save_report(report, "driver_memory.py", args.json)
    print(f"\n{report['command']}")
    for row in report["rows"]:
        print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
