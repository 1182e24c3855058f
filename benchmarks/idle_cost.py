"""What the driver costs while its jobs wait: N one-job chunks held in the queue, nothing changing (issue 16).

On the loopback sshd + Slurm of the test infrastructure (``slurm_ssh``)::

    source /tmp/wfl_async_testinfra/env.sh        # or a checkout's env.sh (scripts/testinfra/checkout_env.sh)
    python benchmarks/idle_cost.py --n 1000 --json idle_cost.json

In a fresh project, N plain :class:`~wfl_async.job.RemoteJob` s (``operator.add``) are submitted held
(``#SBATCH --hold``: none runs, so the shared cluster is not loaded), waited for as a call of
autoparallelize waits (:class:`~wfl_async.job.JobWaiter`); once all are in the queue, the driver's
process CPU (all threads) is measured over ``--seconds`` of waiting, per second and per poll. The held
jobs are cancelled at the end (``scancel``), whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import operator
import resource
import shlex
import sys
import time
from typing import Any

import anyio

from wfl_async.bench import fresh_root, merged_raw_config, save_report, trivial_args
from wfl_async.job import JobWaiter, RemoteJob
from wfl_async.session import session_scope


def _say(message: str) -> None:
    print(f"[benchmark idle_cost] {message}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    name = f"idlecost{int(time.time())}"
    with fresh_root("wfl_async_bench_idle_cost_", merged_raw_config()):
        async with session_scope() as session:
            system = session.system(args.system)
            options = RemoteJob(operator.add, sys_name=args.system, resources={"num_nodes": 1, "max_time": "5m"},
                                check_interval=args.check_interval, timeout=None,
                                header_extra=["#SBATCH --hold"]).options
            prepared = [RemoteJob(operator.add, trivial_args(i), sys_name=args.system, job_name=f"{name}_chunk_{i}",
                                  options=options).prepare(session) for i in range(args.n)]

            async def arrived(job: Any, value: Any, error: BaseException | None) -> None:
                _say(f"unexpected: job ended ({error!r})")

            waiter = JobWaiter(arrived)
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(waiter.serve)
                    for job in prepared:
                        waiter.add(job, job)
                    del prepared
                    while system.watched_count() < args.n:  # noqa: ASYNC110 (the poll loop's count: nothing to wait on)
                        await anyio.sleep(1)
                    await anyio.sleep(args.settle)  # the first looks at the new jobs settle
                    _say(f"all {args.n} jobs queued; measuring {args.seconds} s of waiting")
                    polls0, stats0 = system.stats.get("poll_commands", 0), dict(system.stats)
                    loop = asyncio.get_running_loop()
                    turns = _count_turns(loop)
                    usage0, cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.monotonic()
                    profile = cProfile.Profile(time.process_time) if args.profile else None
                    if profile is not None:
                        profile.enable()
                    await anyio.sleep(args.seconds)
                    if profile is not None:
                        profile.disable()
                        profile.dump_stats(args.profile)
                    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
                    usage = resource.getrusage(resource.RUSAGE_SELF)
                    del loop._run_once  # type: ignore[attr-defined]
                    polls = system.stats.get("poll_commands", 0) - polls0
                    delta = {k: v - stats0.get(k, 0) for k, v in system.stats.items() if v != stats0.get(k, 0)}
                    group.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await system.transport.run(
                        f"squeue --noheader --user=\"$(id -un)\" --format='%i %j' | "
                        f"awk {shlex.quote(f'$2 ~ /{name}/ {{print $1}}')} | xargs -r scancel",
                        retry=True)
    return {"rows": [{"jobs": args.n, "check_interval (s)": args.check_interval, "seconds": round(wall, 2),
                      "driver CPU (ms/s)": round(cpu / wall * 1e3, 3), "polls": polls,
                      "driver CPU per poll (ms)": round(cpu / polls * 1e3, 3) if polls else None,
                      "user, system CPU (ms/s)": [round((usage.ru_utime - usage0.ru_utime) / wall * 1e3, 3),
                                                  round((usage.ru_stime - usage0.ru_stime) / wall * 1e3, 3)],
                      "context switches (voluntary, involuntary)": [usage.ru_nvcsw - usage0.ru_nvcsw,
                                                                     usage.ru_nivcsw - usage0.ru_nivcsw],
                      "event loop turns per s": round(turns[0] / wall, 1),
                      "system stats during": delta}]}


def _count_turns(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count the event loop's turns (each an ``epoll_wait``) from now on: [turns]."""
    turns = [0]
    run_once = loop._run_once  # type: ignore[attr-defined]

    def counted() -> None:
        turns[0] += 1
        run_once()

    loop._run_once = counted  # type: ignore[attr-defined]
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(prog="idle_cost.py", description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="slurm_ssh")
    parser.add_argument("--n", type=int, default=1000, help="jobs held in the queue (default 1000)")
    parser.add_argument("--check-interval", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the waiting is measured")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds waited once all are watched before measuring (past 30: the polls have backed off)")
    parser.add_argument("--profile", help="write a cProfile (process CPU) of the measured waiting to PROFILE")
    parser.add_argument("--json", default="idle_cost.json", help="where to write every figure")
    args = parser.parse_args()
    report = anyio.run(run, args)
    save_report(report, "idle_cost.py", args.json)
    for row in report["rows"]:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
