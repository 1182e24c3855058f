"""``wfl-async bench``: what N trivial jobs cost on a system, from the library's own records.

Every figure comes from what the transport and the system record themselves
(:attr:`Transport.stats.records <wfl_async.transport.base.TransportStats.records>`, one
:class:`~wfl_async.transport.base.CommandRecord` per command with the kind its caller
declared, and ``System.stats``), so nothing is patched and no command text is parsed. The
comparison with wfl + ExPyRe lives in ``benchmarks/`` of the source tree and uses the same
functions.
"""

from __future__ import annotations

import bisect
import json
import math
import operator
import os
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .config.expyre_modules import expyre_module
from .config.loader import config_dirs
from .job import JobWaiter, PreparedJob, RemoteJob
from .jobs import layout
from .session import Session
from .system import System
from .system.commands import dir_list
from .system.poll_loop import PollRecord
from .transport.base import CommandRecord

__all__ = ["MTIME_RESOLUTION", "BenchResult", "BenchRun", "PollStats", "ResultLag", "bench_label", "bench_system", "fresh_root", "merged_raw_config", "peak_rss",
           "poll_stats", "reset_peak_rss", "result_lags", "trivial_args"]

BASE = 2000


def trivial_args(index: int) -> tuple[int, int]:
    """Arguments of job ``index`` (``operator.add``: unpickling it imports nothing); result ``index + BASE``."""
    return (index, BASE)


def bench_label(configs: Sequence[Any]) -> list[Any]:
    """A trivial autoparallelized operation: each configuration with ``info["bench"] = info["i"] + BASE``
    (importable by reference in a job, so a chunk's task carries no code)."""
    out = []
    for atoms in configs:
        atoms = atoms.copy()
        atoms.info["bench"] = atoms.info["i"] + BASE
        out.append(atoms)
    return out


# ---------------------------------------------------------------------- per-poll figures
@dataclass
class PollStats:
    """Remote commands per poll interval (from one status poll to the next)."""

    intervals: int
    max_commands: int
    mean_commands: float
    max_commands_after_submit: int
    """The same, counting only intervals that start once every job is submitted."""
    by_kind: dict[str, int]
    """Commands of each kind over the whole run (submit, poll, fetch, stage, cancel, probe, other)."""


def poll_stats(records: Sequence[CommandRecord], submitted_at: float | None) -> PollStats:
    """Group ``records`` into poll intervals and count the commands in each."""
    polls = [r.started for r in records if r.kind == "poll"]
    counts: list[tuple[float, int]] = []
    for index, start in enumerate(polls):
        end = polls[index + 1] if index + 1 < len(polls) else float("inf")
        counts.append((start, sum(1 for r in records if start <= r.started < end)))
    after = [n for start, n in counts if submitted_at is not None and start >= submitted_at]
    return PollStats(intervals=len(counts), max_commands=max((n for _, n in counts), default=0),
                     mean_commands=sum(n for _, n in counts) / len(counts) if counts else 0.0,
                     max_commands_after_submit=max(after, default=0),
                     by_kind=dict(Counter(r.kind for r in records)))


# ---------------------------------------------------------------------- result lag
@dataclass
class ResultLag:
    """From each job finishing on the cluster to the driver holding its result.

    A job has finished when its final marker is written (its mtime on the cluster); the driver
    holds the result when ``await job.result()`` returns. The cluster's clock is taken against
    ours once, after the run (``clock_offset_s``, good to half that command's round trip).
    """

    jobs: int
    median_s: float | None
    max_s: float | None
    seen_median_s: float | None
    """From the final marker to the end of the poll that found the job finished (before its fetch)."""
    seen_max_s: float | None
    missed: int
    """Jobs not taken by the first poll that started after their final marker and after the poll
    loop took their watch (see :attr:`~wfl_async.system.poll_loop.PollLoop.history`; 0: no poll
    passed a finished job by)."""
    finished_unwatched: int
    """Jobs that finished before the poll loop had their watch (before the driver knew their queue
    id: the submit command was still running): their lag includes the rest of that submission."""
    poll_interval_s: float
    """The poll period asked for (the jobs' ``check_interval``)."""
    poll_gap_median_s: float | None
    """Median time between the starts of two consecutive polls while jobs were watched."""
    poll_gap_max_s: float | None
    longest_poll_s: float | None
    """The longest poll command's own time (from its start to its answer)."""
    longest_fetch_s: float | None
    clock_offset_s: float
    p99_s: float | None = None
    """The 99th percentile of the final marker -> result in the caller lags."""


_FINISHED_AT = (f"xargs -d '\\n' sh -c 'find \"$@\" -maxdepth 1 \\( -name {layout.SUCCEEDED} "
                f"-o -name {layout.FAILED} \\) -printf \"%T@ %h\\n\"' sh")
"""Shell text: ``<mtime> <job dir>`` of the final marker of each job dir on stdin (constant names: no quoting)."""


MTIME_RESOLUTION = 0.01
"""Seconds a file's mtime may lag its writing (the kernel stamps files from a coarse clock, a tick of
a few ms): a poll that started within this of a marker may have just missed it."""


def save_report(report: dict[str, Any], script: str, path: str) -> str:
    """Put the command that made ``report`` into it (``python benchmarks/<script> <its arguments>``),
    write it as JSON to ``path`` (anything not JSON as its text) and return the command."""
    report["command"] = " ".join(shlex.quote(a) for a in ["python", f"benchmarks/{script}", *sys.argv[1:]])
    with open(path, "w") as handle:
        json.dump(report, handle, indent=1, default=str)
    return report["command"]


async def result_lags(system: System, root: str, seen: Mapping[str, float], records: Sequence[CommandRecord],
                      poll_interval: float, polls: Sequence[PollRecord] = (), since: float = -math.inf) -> ResultLag:
    """The :class:`ResultLag` of jobs ``seen`` (job dir -> ``time.time()`` when its result came).

    Two commands after the run (off the clock): the cluster's clock, then the mtime of every
    final marker. ``polls``: the system's poll history over the run. Only jobs that
    finished after ``since`` (``time.time()``) count: a rerun's re-attached jobs have no lag.
    """
    # the cluster's clock from a command of its own: timed around the marker listing (seconds for
    # 10^5 jobs) the midpoint would be late by half of it, and every lag short by as much
    before = time.time()
    clock = await system.transport.run("date +%s.%N", check=False)
    after = time.time()
    offset = float(clock.stdout.decode().strip() or (before + after) / 2) - (before + after) / 2
    answer = await system.transport.run(f"cd {shlex.quote(root)} && {_FINISHED_AT}", stdin=dir_list(seen), check=False)
    finished: dict[str, float] = {}
    for line in answer.stdout.decode().splitlines():
        stamp, _, job_dir = line.partition(" ")
        if float(stamp) - offset >= since:
            finished[job_dir.rstrip("/")] = float(stamp) - offset
    lags = [seen[d] - finished[d] for d in seen if d in finished]
    taken = {d: record for record in polls for d in record.finished}
    watched = {d: at for record in polls for d, at in record.finished.items()}
    seen_lags = [taken[d].started + taken[d].duration - finished[d] for d in finished if d in taken]
    starts = [record.started for record in polls]

    def first_poll_after(at: float) -> float:
        index = bisect.bisect_right(starts, at + MTIME_RESOLUTION)
        return starts[index] if index < len(starts) else math.inf

    missed = sum(1 for d, at in finished.items()
                 if d in taken and taken[d].started > first_poll_after(max(at, watched[d])))
    unwatched = sum(1 for d, at in finished.items() if d in watched and watched[d] > at)
    commands = [r.started for r in records if r.kind == "poll"]
    gaps = [b - a for a, b in zip(commands, commands[1:], strict=False)]
    durations = {kind: [r.duration for r in records if r.kind == kind] for kind in ("poll", "fetch")}
    return ResultLag(jobs=len(lags), median_s=statistics.median(lags) if lags else None,
                     max_s=max(lags, default=None), seen_median_s=statistics.median(seen_lags) if seen_lags else None,
                     seen_max_s=max(seen_lags, default=None), missed=missed, finished_unwatched=unwatched,
                     poll_interval_s=poll_interval,
                     poll_gap_median_s=statistics.median(gaps) if gaps else None, poll_gap_max_s=max(gaps, default=None),
                     longest_poll_s=max(durations["poll"], default=None),
                     longest_fetch_s=max(durations["fetch"], default=None), clock_offset_s=offset,
                     p99_s=statistics.quantiles(lags, n=100)[98] if len(lags) > 1 else max(lags, default=None))


# ---------------------------------------------------------------------- memory
def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_kb(name: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(f"{name}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss() -> int:
    """Peak resident memory of this process in bytes (``VmHWM``, else ``ru_maxrss``)."""
    kb = _status_kb("VmHWM")
    return kb * 1024 if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int | None:
    """Resident memory of this process now, in bytes (``VmRSS``), where known."""
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else None


# ---------------------------------------------------------------------- a private project
def merged_raw_config() -> dict[str, Any]:
    """The ``config.json`` contents that apply here, merged as the loader merges them (raw JSON)."""
    merge = expyre_module("config").update_dict_leaves
    data: dict[str, Any] = {}
    for directory in config_dirs():
        path = directory / "config.json"
        if path.exists():
            merge(data, json.loads(path.read_text()))
    data.pop("local_stage_dir", None)
    return data


@contextmanager
def fresh_root(prefix: str, config: dict[str, Any], *, keep: bool = False) -> Iterator[Path]:
    """A new temporary ``EXPYRE_ROOT`` holding ``config``; set while inside.

    Job keys are content hashes: the same calls in the user's own project would re-attach to
    finished jobs instead of submitting anything (and fill its jobs database).
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    (root / "config.json").write_text(json.dumps(config, indent=2))
    saved = os.environ.get("EXPYRE_ROOT")
    os.environ["EXPYRE_ROOT"] = str(root)
    try:
        yield root
    finally:
        if saved is None:
            os.environ.pop("EXPYRE_ROOT", None)
        else:
            os.environ["EXPYRE_ROOT"] = saved
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------- one run
@dataclass
class BenchResult:
    """N trivial jobs on one system. Times are seconds from the first job created."""

    system: str
    jobs: int
    submit_all_s: float | None = None
    """Until the last submit command returned (every job has its queue id)."""
    first_result_s: float | None = None
    all_results_s: float | None = None
    ok: int = 0
    failed: int = 0
    ssh_connections: int = 0
    remote_commands: int = 0
    polls: int = 0
    scheduler_commands: int = 0
    """Every scheduler invocation: the submit batches, then status (one per poll) and cancel."""
    submit_commands: int = 0
    queue_listings: int = 0
    """Polls that listed the queue (each a scheduler call)."""
    per_poll: PollStats | None = None
    lag: ResultLag | None = None
    """From each job's final marker on the cluster to its result in the driver."""
    peak_rss_bytes: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def jobs_per_s(self) -> float | None:
        return self.jobs / self.all_results_s if self.all_results_s else None

    @property
    def scheduler_commands_per_poll(self) -> float | None:
        """Scheduler commands other than submissions, per poll (at most 1.0: one status command per poll;
        less when polls skipped the listing for the rate limit, or while nothing changed)."""
        return (self.scheduler_commands - self.submit_commands) / self.polls if self.polls else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["jobs_per_s"] = self.jobs_per_s
        data["scheduler_commands_per_poll"] = self.scheduler_commands_per_poll
        return data


@dataclass
class BenchRun:
    """A :class:`BenchResult` and what a follow-up (the benchmarks' floor) needs to find the jobs."""

    result: BenchResult
    records: list[CommandRecord]
    """This run's commands on the system's transport."""
    t0: float
    remote_root: str
    job_dirs: list[str]
    result_at: dict[str, float] = field(default_factory=dict)
    """Job dir -> ``time.time()`` when its result came back."""


async def bench_system(session: Session, system_name: str, n_jobs: int, *, check_interval: float = 0.5,
                       resources: Mapping[str, Any] | None = None, job_timeout: float | None = 900.0,
                       job_options: Mapping[str, Any] | None = None) -> BenchRun:
    """Run ``n_jobs`` jobs ``operator.add(i, 2000)`` on ``system_name`` at once and measure them.

    :param session: a fresh session (in a fresh project: see :func:`fresh_root`)
    :param job_options: further :class:`~wfl_async.jobs.options.JobOptions` of every job
        (e.g. ``{"pack": {"workers": 8}}``)
    :raises ConfigurationError: unknown system or resources that fit no partition
    """
    system = session.system(system_name)
    stats = system.transport.stats
    first_record, connections_before = len(stats.records), stats.connections_opened
    system_before = dict(system.stats)
    reset_peak_rss()
    results: list[float] = []
    seen: dict[str, float] = {}
    errors: list[str] = []
    t0, wall_t0 = time.monotonic(), time.time()
    options = RemoteJob(operator.add, sys_name=system_name, resources=dict(resources or {"num_nodes": 1, "max_time": "5m"}),
                        check_interval=check_interval, timeout=job_timeout, **dict(job_options or {})).options
    # as the chunks of one call of autoparallelize: one options object, one pack worker spec (by the
    # call's name, before its '_chunk_<i>')
    prepared = [RemoteJob(operator.add, trivial_args(i), sys_name=system_name, job_name=f"bench {system_name}_chunk_{i}",
                          options=options).prepare(session) for i in range(n_jobs)]

    job_dirs = [job.job_dir for job in prepared]
    left = n_jobs

    async def arrived(job: PreparedJob, value: Any, error: BaseException | None) -> None:
        nonlocal left
        left -= 1
        index = int(job.spec.args[0])
        if error is not None:  # one failed job is a figure, not the end of the run
            errors.append(f"job {index}: {type(error).__name__}: {error}")
        elif value != sum(trivial_args(index)):
            errors.append(f"job {index}: wrong result {value!r}")
        else:
            results.append(time.monotonic())
            seen[job.job_dir] = time.time()
        if left == 0:
            group.cancel_scope.cancel()

    # as a call of autoparallelize runs its chunks: no task per waiting job (JobWaiter)
    waiter = JobWaiter(arrived)
    async with anyio.create_task_group() as group:
        group.start_soon(waiter.serve)
        for job in prepared:
            waiter.add(job, job)
        del prepared, job
        if not n_jobs:
            group.cancel_scope.cancel()
    t_end = time.monotonic()

    records = stats.records[first_record:]
    submits = [r.started + r.duration for r in records if r.kind == "submit"]
    submitted_at = max(submits) if submits else None
    delta = {k: v - system_before.get(k, 0) for k, v in system.stats.items()}
    root = await system.remote_root()
    result = BenchResult(
        system=system_name, jobs=n_jobs, submit_all_s=submitted_at - t0 if submitted_at is not None else None,
        first_result_s=min(results) - t0 if results else None, all_results_s=t_end - t0,
        ok=len(results), failed=len(errors), ssh_connections=stats.connections_opened - connections_before,
        remote_commands=len(records), polls=delta.get("poll_commands", 0),
        scheduler_commands=delta.get("scheduler_calls", 0), submit_commands=delta.get("submit_commands", 0),
        queue_listings=delta.get("queue_listings", 0),
        per_poll=poll_stats(records, submitted_at),
        lag=await result_lags(system, root, seen, records, check_interval,
                              [p for p in system.poll_history() if p.started >= wall_t0], since=wall_t0),
        peak_rss_bytes=peak_rss(), errors=errors[:5])
    return BenchRun(result, records, t0, root, job_dirs, seen)
