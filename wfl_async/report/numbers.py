"""Where a run's time and core-hours went, computed from the jobs database's records alone.

Pure functions over :class:`~wfl_async.jobs.database.JobRecord` rows and the sessions'
recorded command costs: no I/O, so ``wfl-async report --json``, the HTML report, ``wfl-async
status --summary`` and the summary logged at the end of a call give the same numbers. A run in
progress is measured up to ``now``: a job still queued or running has its phase end there.

Definitions (docs/report.md says the same in words):

- *queue wait*: submitted -> started; *run time*: started -> finished (the markers' times);
  *fetch*: finished -> result back.
- *requested* core-hours: cores x time limit, per job of its own and per packed worker;
  *held*: cores x how long the allocation ran (a job: start -> end; a packed worker: its first
  chunk's start -> its last chunk's end); *used*: cores x run time of succeeded jobs; *wasted*:
  failed (run time of jobs that raised), killed (died or cancelled after starting, up to when
  that was recorded) and idle (a packed worker's held time that no chunk ran in).
- *idle tail*: per system, from when the first worker ran out of work (its last chunk ended)
  to when the last chunk ended: the stretch in which the run waits for stragglers.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..jobs.database import JobRecord
from ..jobs.states import UNFINISHED, JobStatus

__all__ = ["CoreHours", "Failure", "JobSpan", "RunReport", "Spread", "WorkerUse", "build_report", "select_runs",
           "summary_lines"]

_KILLED = (JobStatus.DIED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class JobSpan:
    """One job's phases on the timeline (epoch seconds; None: not reached)."""

    name: str
    system: str
    worker: str
    status: str
    remote_id: str
    cores: int
    created: float
    submitted: float | None
    started: float | None
    finished: float | None
    fetched: float | None
    end: float
    """When its last phase ended (or ``now`` while it still runs)."""
    message: str

    @property
    def queue_wait(self) -> float | None:
        return None if self.submitted is None or self.started is None else max(0.0, self.started - self.submitted)

    @property
    def run_time(self) -> float | None:
        if self.started is None:
            return None
        return max(0.0, (self.finished if self.finished is not None else self.end) - self.started)


@dataclass(frozen=True)
class Spread:
    """Median, mean, longest and total of some durations (s)."""

    count: int = 0
    median: float = 0.0
    mean: float = 0.0
    max: float = 0.0
    total: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        found = list(values)
        if not found:
            return cls()
        return cls(len(found), statistics.median(found), statistics.fmean(found), max(found), sum(found))


@dataclass(frozen=True)
class CoreHours:
    requested: float = 0.0
    held: float = 0.0
    used: float = 0.0
    wasted_failed: float = 0.0
    wasted_killed: float = 0.0
    wasted_idle: float = 0.0

    @property
    def wasted(self) -> float:
        return self.wasted_failed + self.wasted_killed + self.wasted_idle


@dataclass(frozen=True)
class WorkerUse:
    """One place chunks ran: a packed worker job (``host/worker``), or a host for jobs of their own."""

    system: str
    worker: str
    packed: bool
    chunks: int
    busy_seconds: float
    span_seconds: float

    @property
    def utilisation(self) -> float | None:
        """Busy share of a packed worker's span (None for a host: its jobs are separate allocations)."""
        if not self.packed:
            return None
        return self.busy_seconds / self.span_seconds if self.span_seconds > 0 else 1.0


@dataclass(frozen=True)
class Failure:
    """Jobs that ended the same way, with one example."""

    cause: str
    status: str
    count: int
    example_job: str
    example_message: str


@dataclass
class RunReport:
    """Everything ``wfl-async report`` shows."""

    generated_at: float
    jobs: int
    in_progress: bool
    by_status: dict[str, int]
    by_system: dict[str, dict[str, int]]
    wall_seconds: float
    queue_wait: Spread
    run_time: Spread
    fetch_time: Spread
    core_hours: CoreHours
    idle_tail_seconds: dict[str, float]
    workers: list[WorkerUse]
    failures: list[Failure]
    costs: dict[str, Any]
    spans: list[JobSpan] = field(default_factory=list)

    def to_dict(self, *, with_jobs: bool = True) -> dict[str, Any]:
        """Plain JSON-able numbers (``--json``); derived figures (wasted, utilisation) included."""
        out = asdict(self)
        out["core_hours"]["wasted"] = self.core_hours.wasted
        for row, worker in zip(out["workers"], self.workers, strict=True):
            row["utilisation"] = worker.utilisation
        out["spans"] = [{**asdict(s), "queue_wait": s.queue_wait, "run_time": s.run_time} for s in self.spans] \
            if with_jobs else []
        return out


def select_runs(records: Sequence[JobRecord], names: Sequence[str]) -> list[JobRecord]:
    """The jobs of the named calls (``NAME`` and its chunks ``NAME_chunk_N``) or jobs; all if none named."""
    if not names:
        return list(records)
    wanted = set(names)
    return [r for r in records if r.name in wanted or re.sub(r"_chunk_\d+$", "", r.name) in wanted]


def _span(record: JobRecord, now: float) -> JobSpan:
    unfinished = record.status in UNFINISHED
    started = record.started_at
    finished = record.finished_at
    if started is None and finished is not None:
        started = finished  # finished before any poll saw it start, and its started marker is gone
    end = now if unfinished else max(t for t in (record.fetched_at, finished, record.updated_at) if t is not None)
    return JobSpan(name=record.name, system=record.system, worker=record.worker or record.system,
                   status=record.status.value, remote_id=record.remote_id or "", cores=record.cores or 1,
                   created=record.created_at, submitted=record.submitted_at, started=started, finished=finished,
                   fetched=record.fetched_at, end=end, message=(record.message or "").strip())


def _cause(span: JobSpan) -> str:
    """What groups failures: the exception type, or the message with its numbers and ids blanked."""
    first = span.message.splitlines()[0] if span.message else f"{span.status} (no message recorded)"
    typed = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))\b", first)
    if typed:
        return typed.group(1)
    return re.sub(r"\b[\w.]*\d[\w.:]*\b", "N", first)[:120]


def _example(message: str) -> str:
    """A failure's example message: its first line, and the lines after it when that line only
    introduces them (``system 'x' cannot run jobs; nothing was submitted:`` then the reason)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    return (" ".join(lines) if lines[0].endswith(":") else lines[0])[:500]


def _failures(spans: Sequence[JobSpan]) -> list[Failure]:
    groups: dict[tuple[str, str], list[JobSpan]] = defaultdict(list)
    for span in spans:
        if span.status in ("failed", "died", "cancelled", "not_submitted"):
            groups[(span.status, _cause(span))].append(span)
    found = [Failure(cause, status, len(group), group[0].name, _example(group[0].message))
             for (status, cause), group in groups.items()]
    return sorted(found, key=lambda f: (-f.count, f.status, f.cause))


def _workers(spans: Sequence[JobSpan]) -> list[WorkerUse]:
    by_worker: dict[tuple[str, str], list[JobSpan]] = defaultdict(list)
    for span in spans:
        if span.started is not None:
            by_worker[(span.system, span.worker)].append(span)
    uses = []
    for (system, worker), group in sorted(by_worker.items()):
        start = min(s.started for s in group if s.started is not None)
        stop = max((s.finished if s.finished is not None else s.end) for s in group)
        uses.append(WorkerUse(system, worker, "/" in worker, len(group), sum(s.run_time or 0.0 for s in group),
                              max(0.0, stop - start)))
    return uses


def _idle_tails(workers: Sequence[WorkerUse], spans: Sequence[JobSpan]) -> dict[str, float]:
    last_end: dict[str, list[float]] = defaultdict(list)
    for span in spans:
        if span.started is not None:
            last_end[f"{span.system}\0{span.worker}"].append(span.finished if span.finished is not None else span.end)
    tails: dict[str, float] = {}
    for system in sorted({w.system for w in workers}):
        ends = [max(v) for k, v in last_end.items() if k.split("\0")[0] == system]
        tails[system] = max(ends) - min(ends) if ends else 0.0
    return tails


def _core_hours(records: Sequence[JobRecord], spans: Sequence[JobSpan], workers: Sequence[WorkerUse]) -> CoreHours:
    requested = held = used = failed = killed = idle = 0.0
    packed_limits: dict[tuple[str, str], tuple[int, float]] = {}
    for record, span in zip(records, spans, strict=True):
        cores, run = span.cores, span.run_time or 0.0
        if "/" in span.worker:
            packed_limits[(span.system, span.worker)] = (cores, record.max_time or 0.0)
        else:
            requested += cores * (record.max_time or 0.0) if record.submitted_at is not None else 0.0
            held += cores * run
        if span.status in ("succeeded", "processed", "cleaned"):
            used += cores * run
        elif span.status == "failed":
            failed += cores * run
        elif span.status in _KILLED:
            killed += cores * run
    for worker in workers:
        if worker.packed:
            cores, limit = packed_limits.get((worker.system, worker.worker), (1, 0.0))
            requested += cores * limit
            held += cores * worker.span_seconds
            idle += cores * max(0.0, worker.span_seconds - worker.busy_seconds)
    return CoreHours(*(v / 3600 for v in (requested, held, used, failed, killed, idle)))


def _sum_costs(costs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The commands every session that ran these jobs cost, added up per system and per host."""
    systems: dict[str, Counter[str]] = defaultdict(Counter)
    transports: dict[str, Counter[str]] = defaultdict(Counter)
    for session in costs.values():
        for name, stats in session.get("systems", {}).items():
            systems[name].update({k: v for k, v in stats.items() if isinstance(v, (int, float))})
        for host, stats in session.get("transports", {}).items():
            transports[host].update({k: v for k, v in stats.items() if isinstance(v, (int, float))})
    return {"sessions": len(costs), "systems": {k: dict(v) for k, v in sorted(systems.items())},
            "transports": {k: dict(v) for k, v in sorted(transports.items())}}


def build_report(records: Sequence[JobRecord], costs: Mapping[str, Mapping[str, Any]], now: float) -> RunReport:
    """The numbers of a run: ``records`` (its jobs) and ``costs`` (its sessions' command costs) at ``now``."""
    spans = [_span(r, now) for r in records]
    workers = _workers(spans)
    by_system: dict[str, Counter[str]] = defaultdict(Counter)
    for span in spans:
        by_system[span.system][span.status] += 1
    starts = [s.created for s in spans]
    return RunReport(
        generated_at=now, jobs=len(spans), in_progress=any(r.status in UNFINISHED for r in records),
        by_status=dict(Counter(s.status for s in spans)),
        by_system={k: dict(v) for k, v in sorted(by_system.items())},
        wall_seconds=max(s.end for s in spans) - min(starts) if spans else 0.0,
        queue_wait=Spread.of(w for s in spans if (w := s.queue_wait) is not None),
        run_time=Spread.of(t for s in spans if s.finished is not None and (t := s.run_time) is not None),
        fetch_time=Spread.of(s.fetched - s.finished for s in spans if s.fetched is not None and s.finished is not None),
        core_hours=_core_hours(records, spans, workers), idle_tail_seconds=_idle_tails(workers, spans),
        workers=workers, failures=_failures(spans), costs=_sum_costs(costs), spans=spans)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60
                                                                                 else f"{seconds:.1f}s")


def summary_lines(report: RunReport, title: str = "run") -> list[str]:
    """The report in a few lines of text: the end of each call's log and ``status --summary``."""
    if not report.jobs:
        return [f"{title}: no jobs"]
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(report.by_status.items(), key=lambda i: -i[1]))
    where = ", ".join(f"{name} ({sum(c.values())})" for name, c in report.by_system.items())
    packed = sum(1 for w in report.workers if w.packed)
    ch = report.core_hours
    lines = [
        f"{title}: {report.jobs} job(s){' (in progress)' if report.in_progress else ''}: {statuses}; on {where}"
        + (f"; {packed} packed worker(s)" if packed else ""),
        f"wall {_duration(report.wall_seconds)}; queued median {_duration(report.queue_wait.median)} "
        f"(max {_duration(report.queue_wait.max)}); ran median {_duration(report.run_time.median)} "
        f"(max {_duration(report.run_time.max)}); core-hours used {ch.used:.3g} of {ch.held:.3g} held, "
        f"wasted {ch.wasted:.3g}",
    ]
    for failure in report.failures[:3]:
        example = failure.example_message  # the cause's words said once
        if example == failure.cause or example.startswith(failure.cause + " "):
            example = example[len(failure.cause):].strip()
        lines.append(f"{failure.count} {failure.status}: {failure.cause} (e.g. {failure.example_job}"
                     f"{': ' + example[:200] if example else ''})")
    if len(report.failures) > 3:
        lines.append(f"... {len(report.failures) - 3} more failure cause(s): wfl-async report")
    calls = sum(s.get("scheduler_calls", 0) for s in report.costs["systems"].values())
    commands = sum(t.get("commands", 0) for t in report.costs["transports"].values())
    if report.costs["sessions"]:
        lines.append(f"cost {calls} scheduler call(s), {commands} remote command(s)")
    return lines
