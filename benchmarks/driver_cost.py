"""What the driver costs per chunk (issue 16): N trivial chunks packed into W workers, end to end, and reruns.

On the loopback sshd + Slurm of the test infrastructure (``slurm_ssh``)::

    source /tmp/wfl_async_testinfra/env.sh        # or a checkout's env.sh (scripts/testinfra/checkout_env.sh)
    python benchmarks/driver_cost.py --n 2000 --n 10000 --direct 1000 --json driver_cost.json

For each N (a fresh project each): the packed call (``operator.add``, one chunk a job, as
:func:`wfl_async.bench.bench_system` runs it), then a rerun of the same call with its results
present (it must return at once), then a rerun with only the jobs database and the remote
results left (the local stage directory removed: it must re-attach and fetch, submitting
nothing). ``--direct N`` adds one job per chunk (no packing) at N jobs. Every figure is the
driver's own: process CPU (all threads) per chunk and the garbage collector's share of it, peak
resident memory, when the first result reached the caller as a fraction of the run, final marker
-> result in the caller (median and 99th percentile, from each marker's time on the cluster),
remote commands per poll. What the figures mean and how they grow with N: ``docs/benchmark.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import threading
import time
from collections import Counter
from typing import Any

import anyio

from wfl_async.bench import (
    BenchRun,
    bench_system,
    fresh_root,
    merged_raw_config,
    peak_rss,
    reset_peak_rss,
    save_report,
)
from wfl_async.session import Session, session_scope

RESOURCES = {"num_nodes": 1, "max_time": "30m"}


def _say(message: str) -> None:
    print(f"[benchmark driver_cost] {message}", file=sys.stderr, flush=True)


class _GcTime:
    """CPU seconds Python's cyclic garbage collector took (all threads), while entered: a share of the
    driver's CPU that grows with the objects each chunk in flight holds."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: dict[int, float] = {}

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started[threading.get_ident()] = time.thread_time()
        elif (began := self._started.pop(threading.get_ident(), None)) is not None:
            self.seconds += time.thread_time() - began

    def __enter__(self) -> _GcTime:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


async def _measured(session: Session, system: str, n: int, check_interval: float,
                    job_options: dict[str, Any]) -> tuple[BenchRun, dict[str, Any]]:
    """One :func:`bench_system` run and the driver's CPU and memory over it."""
    reset_peak_rss()
    cpu = time.process_time()
    with _GcTime() as collector:
        run = await bench_system(session, system, n, check_interval=check_interval, resources=RESOURCES,
                                 job_timeout=3600.0, job_options=job_options)
    cpu = time.process_time() - cpu
    r = run.result
    kinds = Counter(record.kind for record in run.records)
    figures: dict[str, Any] = {
        "chunks": n, "ok": r.ok, "failed": r.failed, "errors": r.errors,
        "end to end (s)": None if r.all_results_s is None else round(r.all_results_s, 2),
        "driver CPU (ms/chunk)": round(cpu / n * 1e3, 3),
        "of which garbage collection (ms/chunk)": round(collector.seconds / n * 1e3, 3),
        "peak RSS (MiB)": round(peak_rss() / 2**20, 1),
        "first result (s)": None if r.first_result_s is None else round(r.first_result_s, 2),
        "first result (fraction of the run)": None if r.first_result_s is None or not r.all_results_s else
        round(r.first_result_s / r.all_results_s, 3),
        "remote commands": len(run.records), "commands by kind": dict(kinds),
        "submit commands": kinds.get("submit", 0),
        "remote commands per poll (max, mean)": None if r.per_poll is None else
        (r.per_poll.max_commands_after_submit, round(r.per_poll.mean_commands, 2)),
    }
    if r.lag is not None and r.lag.median_s is not None:
        figures["marker to result (median, p99, max s)"] = (round(r.lag.median_s, 2), round(r.lag.p99_s or 0, 2),
                                                            round(r.lag.max_s or 0, 2))
        figures["marker to poll (median s)"] = round(r.lag.seen_median_s or 0, 2)
    return run, figures


async def packed_run(system: str, n: int, workers: int, check_interval: float) -> list[dict[str, Any]]:
    """The packed call, its rerun with results present, its rerun from the jobs database and the remote results."""
    options = {"pack": {"workers": workers}}
    rows = []
    with fresh_root("wfl_async_bench_driver_", merged_raw_config()):
        for mode in ("packed", "rerun, results present", "rerun, local stage removed (jobs database kept)"):
            _say(f"{system}: {mode}, {n} chunks into {workers} workers")
            async with session_scope() as session:
                if mode.startswith("rerun, local"):
                    shutil.rmtree(session.stage_root)
                    session.stage_root.mkdir(mode=0o700)
                _, figures = await _measured(session, system, n, check_interval, options)
                pack = session.packing(system).stats
                figures.update({"mode": f"{mode} ({workers} workers)", "enqueue commands": pack["enqueue_commands"],
                                "workers submitted": pack["workers_submitted"]})
            _say(json.dumps(figures, default=str))
            rows.append(figures)
    return rows


async def direct_run(system: str, n: int, check_interval: float) -> dict[str, Any]:
    """One scheduler job per chunk (no packing)."""
    with fresh_root("wfl_async_bench_driver_direct_", merged_raw_config()):
        _say(f"{system}: one job per chunk, {n} jobs")
        async with session_scope() as session:
            _, figures = await _measured(session, system, n, check_interval, {})
    figures["mode"] = "one job per chunk"
    _say(json.dumps(figures, default=str))
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for n in args.n or [2000]:
        rows += await packed_run(args.system, n, args.workers, args.check_interval)
    if args.direct:
        rows.append(await direct_run(args.system, args.direct, args.check_interval))
    return {"rows": rows}


_SHOWN = ("mode", "chunks", "ok", "end to end (s)", "driver CPU (ms/chunk)", "of which garbage collection (ms/chunk)",
          "peak RSS (MiB)",
          "first result (fraction of the run)", "marker to result (median, p99, max s)",
          "remote commands per poll (max, mean)", "submit commands", "remote commands")


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [[", ".join(map(str, v)) if isinstance(v := row.get(c), tuple | list) else
              ("-" if v is None else str(v)) for c in _SHOWN] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(_SHOWN)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(_SHOWN, widths, strict=True)), "-|-".join("-" * w for w in widths)]
    return "\n".join([*lines, *(" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells)])


def main() -> None:
    parser = argparse.ArgumentParser(prog="driver_cost.py", description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="slurm_ssh")
    parser.add_argument("--n", type=int, action="append", help="packed chunks (repeat for several sizes; default 2000)")
    parser.add_argument("--workers", type=int, default=8, help="packed worker jobs (default 8)")
    parser.add_argument("--direct", type=int, default=0, help="also N jobs one per chunk (the issue asks for 1000)")
    parser.add_argument("--check-interval", type=float, default=0.5)
    parser.add_argument("--json", default="driver_cost.json", help="where to write every figure")
    args = parser.parse_args()
    report = anyio.run(run, args)
    save_report(report, "driver_cost.py", args.json)
    print(f"\n{report['command']}\n\n{_table(report['rows'])}")


if __name__ == "__main__":
    main()
