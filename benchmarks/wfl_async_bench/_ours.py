"""wfl_async running the workload, measured by :func:`wfl_async.bench.bench_system`.

The figures come from the records the transport and the system keep themselves (the same
ones ``wfl-async bench`` prints); nothing is patched and no command text is read.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from wfl_async.bench import bench_system, current_rss, reset_peak_rss
from wfl_async.session import Session

from ._figures import PollFigures, RunFigures

__all__ = ["OurRun", "poll_figures", "run_ours"]


@dataclass
class OurRun:
    """Figures plus what the floor needs: where the rendered jobs are on the system."""

    figures: RunFigures
    remote_root: str
    job_dirs: list[str]


def poll_figures(stats: Any) -> PollFigures:
    """The benchmark's PollFigures from a :class:`wfl_async.bench.PollStats`."""
    return PollFigures(intervals=stats.intervals, max_commands=stats.max_commands, mean_commands=stats.mean_commands,
                       max_commands_after_submit=stats.max_commands_after_submit, by_kind=dict(stats.by_kind))


async def run_ours(session: Session, system_name: str, n_jobs: int, *, check_interval: float,
                   resources: Mapping[str, Any], job_timeout: float, trace_memory: bool = False,
                   job_options: Mapping[str, Any] | None = None, implementation: str = "wfl_async") -> OurRun:
    """Run ``n_jobs`` trivial jobs on ``system_name`` through ``session`` (fresh, unused) and measure.

    :raises ConfigurationError: unknown system or resources that fit no partition
    """
    rss_before = current_rss()
    peak_was_reset = reset_peak_rss()
    if trace_memory:
        tracemalloc.start()
    try:
        run = await bench_system(session, system_name, n_jobs, check_interval=check_interval,
                                 resources=resources, job_timeout=job_timeout, job_options=job_options)
    finally:
        traced_peak = tracemalloc.get_traced_memory()[1] if trace_memory else None
        if trace_memory:
            tracemalloc.stop()
    r = run.result
    figures = RunFigures(
        implementation=implementation, system=system_name, jobs=n_jobs, submit_all_s=r.submit_all_s,
        first_result_s=r.first_result_s, all_results_s=r.all_results_s, ok=r.ok, failed=r.failed,
        ssh_connections=r.ssh_connections, remote_commands=r.remote_commands, scheduler_calls=r.scheduler_commands,
        polls=r.polls, per_poll=poll_figures(r.per_poll) if r.per_poll else None, peak_rss_bytes=r.peak_rss_bytes,
        notes=r.errors[:3], extra={"check_interval_s": check_interval, "rss_before_bytes": rss_before,
                                   # scheduler calls that were not queue listings of a poll
                                   "submit_scheduler_calls": r.scheduler_commands - r.queue_listings,
                                   "peak_rss_is_this_run": peak_was_reset})
    if r.lag is not None:
        figures.extra["result_lag"] = asdict(r.lag)
    # each remote command: start (s from t0), duration (s), kind
    figures.extra["commands"] = [[round(c.started - run.t0, 3), round(c.duration, 3), c.kind] for c in run.records]
    if traced_peak is not None:
        figures.extra["tracemalloc_peak_bytes"] = traced_peak
    return OurRun(figures, run.remote_root, run.job_dirs)
