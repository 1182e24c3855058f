"""wfl_async running the workload, instrumented from outside (no hooks in the library).

The system's ``submit`` and its transport's ``run`` are wrapped on the instances of this
run only: the first tells when every job has its queue id, the second logs each remote
command with its time and kind, from which commands per poll interval follow.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from ..job import PreparedJob, RemoteJob
from ..session import Session
from ..system import System
from ..system.commands import QUEUE_END
from ._figures import PollFigures, RunFigures
from ._workload import TRIVIAL_FUNCTION, current_rss, peak_rss, reset_peak_rss, trivial_args

__all__ = ["OurRun", "run_ours"]


@dataclass
class OurRun:
    """Figures plus what the floor needs: where the rendered jobs are on the system."""

    figures: RunFigures
    remote_root: str
    job_dirs: list[str]


def _kind(command: str, stdin: bytes | None) -> str:
    if QUEUE_END in command:
        return "poll"
    if stdin is not None and " -xf -" in command:
        return "submit"
    if " -cf -" in command:
        return "fetch"
    return "other"


class _Instrument:
    """Wraps one system's ``submit`` and its transport's ``run`` on the instances."""

    def __init__(self, system: System) -> None:
        self.commands: list[tuple[float, str]] = []
        self.durations: list[float] = []
        self.submit_done: list[float] = []
        self.job_dirs: list[str] = []
        """Each submitted job's directory (relative to the system's remote root), in submit order."""
        self._system = system
        original_run = system.transport.run
        original_submit = system.submit

        async def run(command: str, **kwargs: Any) -> Any:
            start = time.monotonic()
            self.commands.append((start, _kind(command, kwargs.get("stdin"))))
            index = len(self.commands) - 1
            self.durations.append(float("nan"))
            try:
                return await original_run(command, **kwargs)
            finally:
                self.durations[index] = time.monotonic() - start

        async def submit(*args: Any, **kwargs: Any) -> str:
            request = args[0] if args else kwargs.get("request")
            remote_id = await original_submit(*args, **kwargs)
            self.job_dirs.append(str(getattr(request, "job_dir", "")))
            self.submit_done.append(time.monotonic())
            return remote_id

        system.transport.run = run  # type: ignore[method-assign]
        system.submit = submit  # type: ignore[method-assign]

    def restore(self) -> None:
        del self._system.transport.run, self._system.submit  # back to the class's methods

    def per_poll(self, submitted_at: float | None) -> PollFigures:
        """Commands in each interval from one poll command to the next (the last one to the end)."""
        by_kind: dict[str, int] = {}
        for _, kind in self.commands:
            by_kind[kind] = by_kind.get(kind, 0) + 1
        poll_times = [t for t, kind in self.commands if kind == "poll"]
        counts: list[tuple[float, int]] = []
        for index, start in enumerate(poll_times):
            end = poll_times[index + 1] if index + 1 < len(poll_times) else float("inf")
            counts.append((start, sum(1 for t, _ in self.commands if start <= t < end)))
        after = [n for start, n in counts if submitted_at is not None and start >= submitted_at]
        return PollFigures(intervals=len(counts), max_commands=max((n for _, n in counts), default=0),
                           mean_commands=sum(n for _, n in counts) / len(counts) if counts else 0.0,
                           max_commands_after_submit=max(after, default=0), by_kind=by_kind)


async def run_ours(runtime: Session, system_name: str, n_jobs: int, *, check_interval: float,
                   resources: Mapping[str, Any], job_timeout: float, trace_memory: bool = False) -> OurRun:
    """Run ``n_jobs`` trivial jobs on ``system_name`` through ``runtime`` (fresh, unused) and measure.

    :raises ConfigurationError: unknown system or resources that fit no partition
    """
    system = runtime.system(system_name)
    transport_before = (system.transport.stats.connections_opened, system.transport.stats.commands_run)
    stats_before = dict(system.stats)
    instrument = _Instrument(system)
    rss_before = current_rss()
    peak_was_reset = reset_peak_rss()
    if trace_memory:
        tracemalloc.start()
    results: list[float] = []
    errors: list[str] = []
    try:
        t0 = time.monotonic()
        prepared = [RemoteJob(TRIVIAL_FUNCTION, trivial_args(i), sys_name=system_name, job_name=f"bench {i}",
                              resources=dict(resources), check_interval=check_interval,
                              timeout=job_timeout).prepare(runtime) for i in range(n_jobs)]

        async def one(index: int, job: PreparedJob) -> None:
            try:
                value = await job.result()
            except Exception as exc:  # one failed job is a figure, not the end of the run
                errors.append(f"job {index}: {type(exc).__name__}: {exc}")
                return
            if value != sum(trivial_args(index)):
                errors.append(f"job {index}: wrong result {value!r}")
                return
            results.append(time.monotonic())

        async with anyio.create_task_group() as group:
            for index, job in enumerate(prepared):
                group.start_soon(one, index, job)
        t_end = time.monotonic()
    finally:
        instrument.restore()
        traced_peak = tracemalloc.get_traced_memory()[1] if trace_memory else None
        if trace_memory:
            tracemalloc.stop()

    submitted_at = max(instrument.submit_done) if len(instrument.submit_done) == n_jobs else None
    stats = {k: v - stats_before.get(k, 0) for k, v in system.stats.items()}
    figures = RunFigures(
        implementation="wfl_async", system=system_name, jobs=n_jobs,
        submit_all_s=submitted_at - t0 if submitted_at is not None else None,
        first_result_s=min(results) - t0 if results else None,
        all_results_s=t_end - t0, ok=len(results), failed=len(errors),
        ssh_connections=system.transport.stats.connections_opened - transport_before[0],
        remote_commands=system.transport.stats.commands_run - transport_before[1],
        scheduler_calls=stats.get("scheduler_calls"), polls=stats.get("poll_commands"),
        per_poll=instrument.per_poll(submitted_at), peak_rss_bytes=peak_rss(),
        notes=errors[:3], extra={"system_stats": stats, "check_interval_s": check_interval,
                                 "rss_before_bytes": rss_before, "peak_rss_is_this_run": peak_was_reset})
    # each remote command: start (s from t0), duration (s), kind
    figures.extra["commands"] = [[round(t - t0, 3), round(d, 3), kind] for (t, kind), d in
                                 zip(instrument.commands, instrument.durations, strict=True)]
    if traced_peak is not None:
        figures.extra["tracemalloc_peak_bytes"] = traced_peak
    return OurRun(figures, await system.remote_root(), [job.job_dir for job in prepared])
