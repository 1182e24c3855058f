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
import os
import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from wfl_async.bench import (
    BASE,
    BenchRun,
    bench_label,
    bench_system,
    fresh_root,
    merged_raw_config,
    peak_rss,
    reset_peak_rss,
    save_report,
)
from wfl_async.session import Session, session_scope

if TYPE_CHECKING:
    from ase import Atoms

    from wfl_async.autoparallelize import AutoparaInfo

RESOURCES = {"num_nodes": 1, "max_time": "30m"}


def _say(message: str) -> None:
    print(f"[benchmark driver_cost] {message}", file=sys.stderr, flush=True)


class _GcTime:
    """CPU seconds Python's cyclic garbage collector took (all threads), while entered: a share of the
    driver's CPU that grows with the objects each chunk in flight holds."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        """Collections of each generation (youngest first; the oldest's walk every tracked object)."""
        self.by_generation = [0.0, 0.0, 0.0]
        """CPU seconds of each generation's collections."""
        self.collected = [0, 0, 0]
        """Objects each generation's collections found unreachable (cyclic garbage)."""
        self._started: dict[int, float] = {}

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started[threading.get_ident()] = time.thread_time()
        elif (began := self._started.pop(threading.get_ident(), None)) is not None:
            generation = info.get("generation", 2)
            self.counts[generation] += 1
            self.by_generation[generation] += time.thread_time() - began
            self.collected[generation] += info.get("collected", 0)

    def __enter__(self) -> _GcTime:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


class _DriverCost:
    """The driver's process CPU (all threads), the garbage collector's share of it and the peak resident
    memory over the block it is entered for."""

    def __enter__(self) -> _DriverCost:
        reset_peak_rss()
        self._gc = _GcTime().__enter__()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self._cpu
        self._gc.__exit__()
        self.peak = peak_rss()

    def figures(self, n: int) -> dict[str, Any]:
        return {"driver CPU (ms/chunk)": round(self.cpu / n * 1e3, 3),
                "of which garbage collection (ms/chunk)": round(sum(self._gc.by_generation) / n * 1e3, 3),
                "of which full collections (ms/chunk)": round(self._gc.by_generation[2] / n * 1e3, 3),
                "collections by generation": self._gc.counts,
                "collection CPU by generation (s)": [round(s, 2) for s in self._gc.by_generation],
                "cyclic garbage collected by generation": self._gc.collected,
                "peak RSS (MiB)": round(self.peak / 2**20, 1)}


def _command_figures(records: list[Any]) -> dict[str, Any]:
    kinds = Counter(record.kind for record in records)
    return {"remote commands": len(records), "commands by kind": dict(kinds), "submit commands": kinds.get("submit", 0)}


async def _measured(session: Session, system: str, n: int, check_interval: float,
                    job_options: dict[str, Any]) -> tuple[BenchRun, dict[str, Any]]:
    """One :func:`bench_system` run and the driver's CPU and memory over it."""
    with _DriverCost() as cost:
        run = await bench_system(session, system, n, check_interval=check_interval, resources=RESOURCES,
                                 job_timeout=3600.0, job_options=job_options)
    r = run.result
    figures: dict[str, Any] = {
        "chunks": n, "ok": r.ok, "failed": r.failed, "errors": r.errors,
        "end to end (s)": None if r.all_results_s is None else round(r.all_results_s, 2),
        **cost.figures(n),
        "first result (s)": None if r.first_result_s is None else round(r.first_result_s, 2),
        "first result (fraction of the run)": None if r.first_result_s is None or not r.all_results_s else
        round(r.first_result_s / r.all_results_s, 3),
        **_command_figures(run.records),
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


def _configs(n: int) -> list[Atoms]:
    """``n`` one-atom configurations numbered by ``info["i"]``."""
    from ase import Atoms

    return [Atoms("H", info={"i": i}) for i in range(n)]


def _check_output(path: Path, n: int) -> list[str]:
    """What is wrong with the call's output file (every configuration once, in order, labelled)."""
    from wfl_async.configset import ConfigSet

    labels = [(atoms.info.get("i"), atoms.info.get("bench")) for atoms in ConfigSet(path)]
    wrong = [f"config {k}: {got}" for k, got in enumerate(labels) if got != (k, k + BASE)]
    return ([f"{len(labels)} configurations, not {n}"] if len(labels) != n else []) + wrong[:5]


async def _autopara_call(configs: list[Atoms], out: Path, info: AutoparaInfo) -> tuple[int, float | None]:
    """One call as a script makes it, by :meth:`autoparallelize.iter`: the chunks that came, and the
    time of the first (from the call's start)."""
    from wfl_async.autoparallelize import autoparallelize
    from wfl_async.configset import ConfigSet, OutputSpec

    t0, first, chunks = time.monotonic(), None, 0
    async for _ in autoparallelize.iter(bench_label, ConfigSet(configs), OutputSpec(out), autopara_info=info):
        chunks += 1
        first = first if first is not None else time.monotonic() - t0
    return chunks, first


async def autopara_run(system: str, n: int, workers: int, check_interval: float) -> list[dict[str, Any]]:
    """An autoparallelized call over ``n`` one-atom configurations, one a chunk, packed, into an output
    file; its rerun with the output present (returns at once: nothing is prepared), and its rerun with
    the output file and the local stage removed (jobs database and remote results kept). Imported here:
    ase and the ConfigSet machinery are about 50 MiB of the driver's resident memory, which the other
    modes' peak would count."""
    from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo

    rows = []
    # by default a call marks its jobs processed and a rerun creates them afresh (as ExPyRe); kept, a
    # rerun re-attaches to them (docs/remote-info.md), which is the rerun measured here
    os.environ["WFL_EXPYRE_NO_MARK_PROCESSED"] = "1"
    configs = _configs(n)  # the script's inputs: made before the call, as a script reads them
    with fresh_root("wfl_async_bench_driver_autopara_", merged_raw_config()) as root:
        out = root / "out.xyz"
        remote = RemoteInfo(sys_name=system, job_name="driver cost", resources=RESOURCES, num_inputs_per_queued_job=1,
                            check_interval=check_interval, pack={"workers": workers})
        info = AutoparaInfo(remote_info=remote, num_python_subprocesses=0, num_inputs_per_python_subprocess=1)
        for mode in ("autoparallelize, packed", "autoparallelize rerun, output present",
                     "autoparallelize rerun, output and local stage removed"):
            _say(f"{system}: {mode}, {n} chunks into {workers} workers")
            async with session_scope() as session:  # the call joins it: its commands are counted here
                if mode.endswith("removed"):
                    out.unlink()
                    shutil.rmtree(session.stage_root)
                    session.stage_root.mkdir(mode=0o700)
                transport = session.system(system).transport
                first_record = len(transport.stats.records)
                t0 = time.monotonic()
                with _DriverCost() as cost:
                    chunks, first = await _autopara_call(configs, out, info)
                wall = time.monotonic() - t0
                pack = session.packing(system).stats
                figures: dict[str, Any] = {
                    "mode": f"{mode} ({workers} workers)", "chunks": n, "chunks that came": chunks,
                    "end to end (s)": round(wall, 2), **cost.figures(n),
                    "first result (fraction of the run)": None if first is None else round(first / wall, 3),
                    **_command_figures(transport.stats.records[first_record:]),
                    "enqueue commands": pack["enqueue_commands"], "workers submitted": pack["workers_submitted"]}
            if "present" not in mode:  # (the file the first call wrote: checked then) checked after the timing
                figures["errors"] = await anyio.to_thread.run_sync(_check_output, out, n)
                figures["ok"] = None if figures["errors"] else n
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
    for n in args.n or ([] if args.autopara else [2000]):
        rows += await packed_run(args.system, n, args.workers, args.check_interval)
    for n in args.autopara or []:
        rows += await autopara_run(args.system, n, args.workers, args.check_interval)
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
    parser.add_argument("--autopara", type=int, action="append",
                        help="also an autoparallelized call over N one-atom configurations into an output file, "
                             "packed, and its two reruns (repeat for several sizes)")
    parser.add_argument("--direct", type=int, default=0, help="also N jobs one per chunk (the issue asks for 1000)")
    parser.add_argument("--check-interval", type=float, default=0.5)
    parser.add_argument("--json", default="driver_cost.json", help="where to write every figure")
    args = parser.parse_args()
    report = anyio.run(run, args)
    save_report(report, "driver_cost.py", args.json)
    print(f"\n{report['command']}\n\n{_table(report['rows'])}")


if __name__ == "__main__":
    main()
