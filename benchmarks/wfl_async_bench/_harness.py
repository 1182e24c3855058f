"""Run the benchmark: wfl_async, the floor and wfl + ExPyRe, on each system, in one process run."""

from __future__ import annotations

import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wfl_async.session import session_scope

from ._expyre import MODES, expyre_available, run_expyre
from ._figures import RunFigures
from ._floor import run_floor
from ._ours import run_ours
from ._workload import fresh_root, merged_raw_config

__all__ = ["BenchmarkOptions", "BenchmarkReport", "run_benchmark"]


@dataclass
class BenchmarkOptions:
    """What to run. ``jobs`` may hold several sizes (commands per poll must not depend on it)."""

    systems: Sequence[str]
    jobs: Sequence[int] = (200,)
    check_interval: float = 0.5
    floor: bool = True
    compare_expyre: bool = True
    expyre_jobs: int | None = None
    """Jobs for the ExPyRe runs; default the largest of ``jobs`` (the honest same-N comparison)."""
    expyre_modes: Sequence[str] = ("plain", "cm")
    expyre_check_interval: float = 1.0
    scale_expyre: bool = False
    """Compare ExPyRe run with fewer jobs by scaling its time linearly (only when asked)."""
    resources: dict[str, Any] = field(default_factory=lambda: {"num_nodes": 1, "max_time": "5m"})
    timeout: float = 900.0
    repeat: int = 1
    """Runs of wfl_async (each followed by its floor) per job count; the machine may be shared."""
    keep: bool = False
    trace_memory: bool = False


@dataclass
class BenchmarkReport:
    runs: list[RunFigures] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)
    command: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"command": self.command, "runs": [run.as_dict() for run in self.runs], "ratios": self.ratios}


def _say(message: str) -> None:
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


async def _ours_and_floor(options: BenchmarkOptions, system_name: str, n_jobs: int,
                          raw_config: dict[str, Any]) -> list[RunFigures]:
    with fresh_root("wfl_async_bench_", raw_config, keep=options.keep):
        async with session_scope() as session:
            _say(f"{system_name}: wfl_async, {n_jobs} jobs")
            ours = await run_ours(session, system_name, n_jobs, check_interval=options.check_interval,
                                  resources=options.resources, job_timeout=options.timeout,
                                  trace_memory=options.trace_memory)
            runs = [ours.figures]
            system = session.system(system_name)
            if options.floor and system.config.scheduler != "local":
                _say(f"{system_name}: floor, the same {n_jobs} job scripts by a plain submit loop")
                runs.append(await run_floor(system, ours.remote_root, ours.job_dirs, job_timeout=options.timeout,
                                            keep=options.keep))
            if not options.keep:
                await system.transport.run(f"rm -rf {shlex.quote(ours.remote_root)}", check=False)
    return runs


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def _median_run(runs: list[RunFigures]) -> RunFigures:
    ordered = sorted(runs, key=lambda r: r.all_results_s or float("inf"))
    return ordered[(len(ordered) - 1) // 2]


def _ratios(options: BenchmarkOptions, runs: list[RunFigures]) -> list[dict[str, Any]]:
    """Each floor against the wfl_async run just before it; ExPyRe against the median wfl_async run."""
    ratios: list[dict[str, Any]] = []
    grouped: dict[tuple[str, int], list[RunFigures]] = {}
    for r in runs:
        if r.implementation == "wfl_async":
            grouped.setdefault((r.system, r.jobs), []).append(r)
    ours = {key: _median_run(group) for key, group in grouped.items()}
    previous: RunFigures | None = None
    for run in runs:
        mine = ours.get((run.system, run.jobs))
        if run.implementation.startswith("floor") and previous is not None:
            ratios.append({"system": run.system, "jobs": run.jobs, "what": "wfl_async / floor (end to end)",
                           "ratio": _ratio(previous.all_results_s, run.all_results_s)})
        elif run.implementation in MODES.values():
            what = f"{run.implementation} / wfl_async (end to end)"
            if mine is not None:
                ratios.append({"system": run.system, "jobs": run.jobs, "what": what,
                               "ratio": _ratio(run.all_results_s, mine.all_results_s)})
                continue
            largest = max((r for r in ours.values() if r.system == run.system), key=lambda r: r.jobs, default=None)
            if largest is None or run.all_results_s is None:
                continue
            if options.scale_expyre:
                scaled = run.all_results_s * largest.jobs / run.jobs
                ratios.append({"system": run.system, "jobs": largest.jobs, "what": f"{what}, ExPyRe SCALED "
                               f"linearly from {run.jobs} jobs", "ratio": _ratio(scaled, largest.all_results_s)})
            else:
                ratios.append({"system": run.system, "jobs": run.jobs, "what": f"{what}: not comparable, "
                               f"ExPyRe ran {run.jobs} jobs (use --scale-expyre to scale)", "ratio": None})
        if run.implementation == "wfl_async":
            previous = run
    floors: dict[tuple[str, int], list[float]] = {}
    for ratio in ratios:
        if ratio["what"].endswith("floor (end to end)") and ratio["ratio"] is not None:
            floors.setdefault((ratio["system"], ratio["jobs"]), []).append(ratio["ratio"])
    for (system, jobs), values in floors.items():
        if len(values) > 1:
            ratios.append({"system": system, "jobs": jobs, "what": f"wfl_async / floor, median of {len(values)} "
                           f"runs", "ratio": statistics.median(values)})
    return ratios


async def run_benchmark(options: BenchmarkOptions) -> BenchmarkReport:
    """Run every requested implementation on every system; each run submits afresh.

    Call it with no wfl_async session open on the event loop: each run opens its own,
    against a temporary ``EXPYRE_ROOT`` holding a copy of the configuration.
    """
    raw_config = merged_raw_config()
    report = BenchmarkReport()
    for system_name in options.systems:
        for n_jobs in sorted(options.jobs):
            for _ in range(options.repeat):
                report.runs.extend(await _ours_and_floor(options, system_name, n_jobs, raw_config))
        if not options.compare_expyre:
            continue
        if not expyre_available():
            _say("wfl / expyre-wfl not installed: no comparison (pip install wfl expyre-wfl)")
            continue
        n_expyre = options.expyre_jobs or max(options.jobs)
        for mode in options.expyre_modes:
            _say(f"{system_name}: {MODES[mode]}, {n_expyre} jobs (about 0.7 s per job over ssh)")
            report.runs.append(await run_expyre(system_name, raw_config, n_expyre, mode=mode,
                                                check_interval=options.expyre_check_interval,
                                                resources=options.resources, job_timeout=options.timeout,
                                                keep=options.keep))
    report.ratios = _ratios(options, report.runs)
    return report
