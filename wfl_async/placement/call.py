"""One call's chunks over several systems: which systems are usable, where each chunk goes, and
the watch that moves waiting chunks off a slow system (each at most once).

Each chunk runs as an ordinary :class:`~wfl_async.job.PreparedJob` of its system (the system's
loops are unchanged); a chunk to move has its wait cancelled (the job stays queued: cancelling a
wait never touches the job), is taken back by :mod:`.mover`, and is then prepared again for the
target system and run there. A rerun re-attaches each chunk where the jobs database says it is.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from ..doctor.first_submission import ensure_system_ready
from ..errors import ConfigurationError, SchedulerError, SystemNotReadyError
from ..job import PreparedJob, RemoteJob
from ..jobs.database import JobRecord
from ..jobs.options import JobOptions
from ..jobs.states import REATTACH, JobStatus
from ..session import Session
from .choices import Choice, parse_sys_names
from .decide import Measured, Move, Seen, plan_moves, spread
from .measure import measure
from .mover import Outcome, move, record_intents, resolve

__all__ = ["Plan", "PlacedCall", "plan", "usable_systems"]

log = logging.getLogger(__name__)


async def usable_systems(session: Session, choices: Sequence[Choice], resources: Mapping[str, Any], *,
                         exact_fit: bool, partial_node: bool) -> list[Choice]:
    """The listed systems that take ``resources`` and pass their first-submission check.

    A system left out is named in a warning with its reason.

    :raises ConfigurationError: an unknown system name (a typo: nothing is left out silently), or
        no listed system is usable (each one's reason named); raised before anything is submitted
    """
    for choice in choices:
        session.system(choice.name)  # an unknown name fails here, naming the configured ones
    reasons: dict[str, str] = {}
    usable: list[Choice] = []
    for choice in choices:
        try:
            session.system(choice.name).select_partition(dict(resources), exact_fit=exact_fit,
                                                         partial_node=partial_node)
            await ensure_system_ready(await session.serving(choice.name))
        except (ConfigurationError, SystemNotReadyError) as exc:
            reasons[choice.name] = str(exc)
            log.warning("system %s left out of this call: %s", choice.name, exc)
            continue
        usable.append(choice)
    if not usable:
        raise ConfigurationError("no listed system can run this call, nothing was submitted:\n"
                                 + "\n".join(f"  {name}: {why}" for name, why in reasons.items())
                                 + "\nFix one of them, or list another system in sys_name.")
    return usable


@dataclass
class Plan:
    """A call over several usable systems: their preference, their figures, how often to look."""

    session: Session
    choices: tuple[Choice, ...]
    measured: dict[str, Measured]
    check_every: float

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.choices]

    def spread(self, count: int) -> list[str]:
        """The system of each of ``count`` jobs (:func:`~.decide.spread`), logged."""
        placed = spread(count, self.choices, self.measured)
        log.info("placing %d job(s): %s (%s)", count, dict(Counter(placed)),
                 "by measured queue wait and throughput" if all(m.known for m in self.measured.values())
                 else "by preference: not every system is measured yet")
        return placed

    def runner(self, jobs: Sequence[PreparedJob]) -> PlacedCall:
        return PlacedCall(self.session, jobs, self.names, self.measured, self.check_every)


async def plan(session: Session, sys_name: Any, resources: Mapping[str, Any], options: JobOptions) -> Plan | None:
    """None for one listed system; for several, the usable ones (checked before anything is submitted,
    :func:`usable_systems`) and their figures from the jobs database."""
    choices = parse_sys_names(sys_name)
    if len(choices) == 1:
        return None
    usable = await usable_systems(session, choices, resources, exact_fit=options.exact_fit,
                                  partial_node=options.partial_node)
    return Plan(session, tuple(usable), await measure(session.db, [c.name for c in usable]),
                max(1.0, min(options.check_interval or 1.0, 10.0)))


class PlacedCall:
    """Runs one call's prepared chunks, watching for chunks to move (see the module docstring).

    :param check_every: seconds between two looks at where the chunks stand
    """

    def __init__(self, session: Session, jobs: Sequence[PreparedJob], systems: Sequence[str],
                 measured: Mapping[str, Measured], check_every: float) -> None:
        self.session = session
        self.systems = list(systems)
        self.measured = dict(measured)
        self.check_every = check_every
        self._keys = [job.key for job in jobs]
        self._waits: dict[str, anyio.CancelScope] = {}
        self._taken_back: dict[str, anyio.Event] = {}
        self._outcomes: dict[str, tuple[Outcome, str]] = {}
        self._moved: set[str] = set()
        self._finished: set[str] = set()
        self._resolved = anyio.Event()
        self.moves = 0
        """Chunks moved by this run."""
        self._done_systems: Counter[str] = Counter()
        """System -> chunks of this call whose result came in from it."""
        self._done_starts: dict[str, list[float]] = {}
        """System -> when each of those started (their rate of starting, once they are no longer looked at)."""
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in self.systems}
        """System -> this call's chunks there by ``queued`` / ``running`` / ``done`` (last look)."""

    async def result(self, job: PreparedJob) -> Any:
        """The chunk's value, wherever it ends up running (run :meth:`watch` beside it)."""
        await self._resolved.wait()
        record = await self.session.db.get(job.key)
        if record is not None and record.moved_from is not None:
            self._moved.add(job.key)
        if record is not None and record.system != job.system.name and (
                record.status in REATTACH or record.moved_from is not None):
            job = self._prepared_on(job, record.system)  # where it is (or was moved to), whatever the list says
        try:
            while True:
                with anyio.CancelScope() as scope:
                    self._waits[job.key] = scope
                    try:
                        value = await job.result()
                        self._finished.add(job.key)  # counted below from now on, not from the records
                        self._done_systems[job.system.name] += 1
                        self._done_starts.setdefault(job.system.name, []).append(await self._started_at(job.key))
                        return value
                    finally:
                        del self._waits[job.key]
                await self._taken_back[job.key].wait()  # its wait was cancelled to move it
                outcome, target = self._outcomes.pop(job.key)
                if outcome.moved:
                    self.moves += 1
                    job = self._prepared_on(job, target)
        finally:
            self._finished.add(job.key)

    async def _started_at(self, key: str) -> float:
        record = await self.session.db.get(key)
        return record.started_at if record is not None and record.started_at is not None else time.time()

    def _prepared_on(self, job: PreparedJob, name: str) -> PreparedJob:
        return RemoteJob(job.spec.function, job.spec.args, job.spec.kwargs, sys_name=name,
                         job_name=job.spec.job_name, options=job.spec.options).prepare(self.session)

    async def watch(self) -> None:
        """First finish the moves a stopped run left under way; then every ``check_every`` s count the
        chunks per system and move waiting ones (until cancelled)."""
        db = self.session.db
        half_done = [r for r in (await db.get_many(self._keys)).values() if r.moved_to is not None]
        for source, stopped in _by_system(half_done).items():
            await resolve(db, await self.session.serving(source), stopped)
        self._resolved.set()
        while True:
            await anyio.sleep(self.check_every)
            records = await db.get_many([k for k in self._keys if k not in self._finished])
            self._count(records.values())
            moves = [m for m in plan_moves(self._seen(records.values()), self.measured, self._moved, time.time())
                     if m.key in self._waits and records[m.key].status is JobStatus.SUBMITTED
                     and records[m.key].moved_to is None]
            for source in {m.source for m in moves}:
                with anyio.CancelScope(shield=True):  # a move begun is finished (or left recorded for a rerun)
                    await self._move(source, [m for m in moves if m.source == source])

    async def _move(self, source: str, moves: list[Move]) -> None:
        db = self.session.db
        await record_intents(db, [(m.key, m.target, m.reason) for m in moves])
        for m in moves:
            log.info("moving chunk %s from %s to %s: %s", m.key[:12], m.source, m.target, m.reason)
            self._moved.add(m.key)
            self._taken_back[m.key] = anyio.Event()
            self._waits[m.key].cancel()  # its wait ends (the job stays queued) before it is taken back
        records = list((await db.get_many([m.key for m in moves])).values())
        try:
            outcomes = await move(db, await self.session.serving(source), records)
        except SchedulerError as exc:
            log.warning("%s; the chunks are waited for on %s meanwhile", exc, source)
            outcomes = {}
        for m in moves:
            self._outcomes[m.key] = (outcomes.get(m.key, Outcome(False, "not known to be taken back")), m.target)
            self._taken_back[m.key].set()

    def _count(self, records: Any) -> None:
        counts = {name: Counter[str]() for name in self.systems}
        for r in records:
            kind = "running" if r.status is JobStatus.STARTED else "done" if r.status is JobStatus.SUCCEEDED \
                else "queued"
            counts.setdefault(r.system, Counter())[kind] += 1
        for name, n in self._done_systems.items():
            counts.setdefault(name, Counter())["done"] += n
        self.counts = counts

    def _seen(self, records: Any) -> dict[str, Seen]:
        seen = {name: Seen() for name in self.systems}
        for r in records:
            s = seen.get(r.system)
            if s is None or r.submitted_at is None:
                continue
            s.first_submitted = min(r.submitted_at, s.first_submitted or r.submitted_at)
            if r.status is JobStatus.SUBMITTED:
                s.waiting[r.key] = r.submitted_at
            elif r.started_at is not None:
                s.starts.append(r.started_at)
                s.waits.append(max(0.0, r.started_at - r.submitted_at))
        for name, starts in self._done_starts.items():
            if name in seen:
                seen[name].starts.extend(starts)
        return seen

    def line(self) -> str:
        """Per-system counts and moves, for the progress line."""
        parts = [f"{name} q{c['queued']} r{c['running']} d{c['done']}" for name, c in self.counts.items()]
        return " | ".join(parts) + f" | moved {self.moves}"


def _by_system(records: Sequence[JobRecord]) -> dict[str, list[JobRecord]]:
    grouped: dict[str, list[JobRecord]] = {}
    for r in records:
        grouped.setdefault(r.system, []).append(r)
    return grouped
