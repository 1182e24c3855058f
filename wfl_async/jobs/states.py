"""Every state a job can be in, and the one set of rules that moves a job between them.

Three vocabularies meet here:

- :class:`QueueState`: what ``squeue``/``qstat`` say about a job still in their tables;
- :class:`Marker`: the files the job's worker writes in its directory (the truth about
  whether it ran: only a final marker says done);
- :class:`JobStatus`: what the jobs database records (ExPyRe's statuses).

:func:`classify` turns one survey of a system (queue listing + markers) into a
:class:`Verdict` per job; the system's poll loop and ``wfl-async sync`` both use it, and
:func:`status_update` turns a verdict into the database update. A watched job's progress in the
poll loop is one :class:`WatchState` (its :class:`Phase` and timing), moved by the pure
:func:`observe` at each poll. A job missing from the queue
without a final marker is not "done": it is called died only after a grace period, because
queue records vanish (Slurm's ``MinJobAge``) and shared filesystems lag.

This module imports only :mod:`.layout`: it is part of the floor data layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from typing import Any

from . import layout
from .ended import EndCause, Ending

__all__ = ["ACTIVE_STATES", "FINISHED", "KEPT_OVER", "MARKER_FILES", "REATTACH", "RERUNNABLE", "UNFINISHED", "JobStatus",
           "Marker", "Phase", "QueueState", "Step", "Verdict", "VerdictKind", "WatchState", "classify", "observe",
           "past_grace", "status_update", "unchanged"]


class QueueState(StrEnum):
    """What ``squeue``/``qstat`` say about a job still in their tables."""

    QUEUED = "queued"
    """Waiting for resources."""
    HELD = "held"
    """Waiting, and held by the user or an admin (``scontrol hold``, ``qhold``)."""
    RUNNING = "running"
    """Started (includes Slurm's COMPLETING: the job script may still be writing)."""
    FINISHED = "finished"
    """Still listed but finished (Slurm COMPLETED, PBS ``C``); the marker decides success."""
    FAILED = "failed"
    """Ended by the scheduler: FAILED, CANCELLED, NODE_FAIL, OUT_OF_MEMORY, SGE ``Eqw``."""
    TIMEOUT = "timeout"
    """Killed by the scheduler at its time limit (Slurm TIMEOUT)."""
    UNKNOWN = "unknown"
    """A state this code does not know; treated as still active, with a warning."""


ACTIVE_STATES = frozenset({QueueState.QUEUED, QueueState.HELD, QueueState.RUNNING, QueueState.UNKNOWN})
"""States in which the job may still write its marker."""


class Marker(StrEnum):
    """Marker files in a job directory, by the name the marker command prints for them."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self is not Marker.STARTED


MARKER_FILES: Mapping[Marker, str] = {
    Marker.SUCCEEDED: layout.SUCCEEDED, Marker.FAILED: layout.FAILED, Marker.STARTED: layout.STARTED}
"""File name of each marker, final ones first (the marker command checks in this order)."""
_BY_NAME = {m.value: m for m in Marker}


class JobStatus(StrEnum):
    CREATED = "created"
    """Claimed and staged locally; possibly being submitted."""
    SUBMITTED = "submitted"
    """Accepted by the queueing system."""
    STARTED = "started"
    """The job's worker began running the function."""
    SUCCEEDED = "succeeded"
    """The function returned; its value is waiting to be fetched or was fetched."""
    FAILED = "failed"
    """The function raised. A rerun creates the job afresh."""
    DIED = "died"
    """Left the queue without a final marker (time limit, node failure, killed by an admin)."""
    CANCELLED = "cancelled"
    """Cancelled by the user (``wfl-async cancel``); a rerun raises JobCancelledError, ``wfl-async
    rerun`` creates it afresh."""
    NOT_SUBMITTED = "not_submitted"
    """Claimed but never submitted: the call stopped at a check (e.g. the first-submission check).
    A rerun creates the job afresh."""
    RERUN = "rerun"
    """Marked by ``wfl-async rerun``: the next run of its workflow submits it afresh."""
    PROCESSED = "processed"
    """Its result was used by the caller. A rerun creates the job afresh (as ExPyRe)."""
    CLEANED = "cleaned"
    """Its remote directory was removed."""


REATTACH = frozenset({JobStatus.CREATED, JobStatus.SUBMITTED, JobStatus.STARTED, JobStatus.SUCCEEDED,
                      JobStatus.DIED, JobStatus.CANCELLED})
"""A rerun re-attaches to jobs in these states instead of creating them again."""
UNFINISHED = (JobStatus.CREATED, JobStatus.SUBMITTED, JobStatus.STARTED)
"""A job in these states may still run (or be about to)."""
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DIED, JobStatus.CANCELLED, JobStatus.NOT_SUBMITTED,
            JobStatus.RERUN, JobStatus.PROCESSED)
"""A job in these states will never run again; its directories may be cleaned."""
RERUNNABLE = (JobStatus.FAILED, JobStatus.DIED, JobStatus.CANCELLED, JobStatus.NOT_SUBMITTED)
"""``wfl-async rerun`` makes jobs in these states be created afresh by the call's next run."""
KEPT_OVER: Mapping[JobStatus, frozenset[JobStatus]] = {JobStatus.DIED: frozenset({JobStatus.CANCELLED}),
                                                        JobStatus.STARTED: frozenset({JobStatus.CANCELLED})}
"""A poll's update to the key status never overwrites the statuses of its value: a job the user
cancelled (in another process) stays cancelled when the workflow's poll later sees it started
(its marker, written before the cancel) or gone. A final marker still wins: it did finish."""


class VerdictKind(Enum):
    FINISHED = "finished"
    """A final marker is there: the job's result can be fetched."""
    ACTIVE = "active"
    """The scheduler still lists it as queued/held/running (or could not be asked)."""
    MISSING = "missing"
    """Gone from the queue without a final marker, still within the grace period."""
    DIED = "died"
    """Gone from the queue without a final marker for longer than the grace period."""


@dataclass(frozen=True)
class Verdict:
    """What one survey says about one job."""

    kind: VerdictKind
    marker: Marker | None = None
    queue_state: QueueState | None = None
    message: str = ""
    cause: EndCause | None = None
    """Why it died, where the scheduler's accounting told (:mod:`.ended`)."""

    @property
    def started(self) -> bool:
        return self.marker is not None


def past_grace(missing_for: float | None, grace: float) -> bool:
    """Whether something missing from the queue for ``missing_for`` s (None: not seen missing
    before) has been gone long enough to be called died: the one grace rule for jobs and workers."""
    return missing_for is not None and missing_for > grace


def classify(*, remote_id: str | None, marker: str | None, states: Mapping[str, QueueState] | None,
             missing_for: float | None, grace: float, where: str, detail: str = "",
             ending: Ending | None = None) -> Verdict:
    """The verdict on one job from one survey.

    :param marker: what the marker command printed for the job's directory (None: no marker)
    :param states: the scheduler's listing; None when the status command failed, which never
        makes a job died (the job is taken as still active)
    :param missing_for: seconds the job has already been seen missing (None: not before)
    :param grace: seconds a job may be missing before it is called died
    :param where: the system's name, for the message
    :param detail: what the scheduler's accounting adds (``exit code 1:0``), for the message
    :param ending: why it ended, by the scheduler's accounting: a cause other than a plain failure
        is final at once (no grace: no marker can come any more), and named in the message
    """
    seen = _BY_NAME.get(marker or "")
    if seen is not None and seen.final:
        return Verdict(VerdictKind.FINISHED, seen, QueueState.FINISHED)
    state = (states or {}).get(remote_id or "")
    if states is None or state in ACTIVE_STATES:
        return Verdict(VerdictKind.ACTIVE, seen, state)
    extra = f", {detail}" if detail else ""
    if ending is not None and ending.cause is not EndCause.FAILED:
        return Verdict(VerdictKind.DIED, seen, state, f"job {remote_id} on {where} was {detail or ending.sentence()}: "
                       f"it left the queue without a final marker", ending.cause)
    if state is QueueState.TIMEOUT:  # the scheduler killed it: no marker can come any more, no grace
        return Verdict(VerdictKind.DIED, seen, state,
                       f"job {remote_id} was killed at its time limit by {where} (TIMEOUT{extra}) before "
                       f"writing its final marker", EndCause.TIMEOUT)
    if not past_grace(missing_for, grace):
        return Verdict(VerdictKind.MISSING, seen, state)
    how = state.value if state else "no longer listed"
    return Verdict(VerdictKind.DIED, seen, state,
                   f"job {remote_id} left the queue of {where} ({how}{extra}) without a final marker for {grace:.0f} s",
                   ending.cause if ending is not None else None)


def status_update(verdict: Verdict, current: JobStatus | None = None) -> dict[str, Any] | None:
    """The jobs database update a verdict calls for (None: nothing changed).

    :param current: the job's recorded status, so that a started job is recorded once
    """
    if verdict.kind is VerdictKind.FINISHED:
        status = JobStatus.SUCCEEDED if verdict.marker is Marker.SUCCEEDED else JobStatus.FAILED
        return {"status": status}
    if verdict.kind is VerdictKind.DIED:
        return {"status": JobStatus.DIED, "message": verdict.message,
                "end_cause": verdict.cause.value if verdict.cause else None}
    if verdict.started and current in (None, JobStatus.SUBMITTED):
        return {"status": JobStatus.STARTED}
    return None


class Phase(Enum):
    """Where a watched job is in the poll loop: its one answer to "what state is this job in?"."""

    NEW = "new"
    """Handed to the poll loop, not taken by it yet."""
    WATCHED = "watched"
    """Submitted and not seen to end: every poll looks for its markers (and the queue for it)."""
    FETCHING = "fetching"
    """A final marker was seen: its files are being fetched (polls leave it alone meanwhile)."""
    ENDED = "ended"
    """Finished and fetched, died, or its waiter gave up: the loop forgets it."""


class Step(Enum):
    """What the poll loop does after :func:`observe`."""

    NOTHING = "nothing"
    STARTED = "started"
    """Record it started (once)."""
    FETCH = "fetch"
    """Hand it to the fetch task."""
    DIED = "died"
    """Record it died and wake its waiter."""


@dataclass(frozen=True, slots=True)
class WatchState:
    """What the poll loop knows of one watched job; moved only by :func:`observe` and the methods here."""

    phase: Phase = Phase.NEW
    marker: Marker | None = None
    """The strongest marker seen so far (a scan of its directory, or the run's event log)."""
    started_at: float | None = None
    """``time.monotonic()`` when the loop first saw it started (for its expected end)."""
    missing_since: float | None = None
    """When a listing first had it gone from the queue without a final marker."""
    queue_active: bool = False
    """The last queue listing had it queued, held or running."""
    scanned: bool = False
    """Its directory's markers were looked at once (the event log tells what changes afterwards)."""

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def taken(self) -> WatchState:
        """The loop took it (NEW -> WATCHED)."""
        return replace(self, phase=Phase.WATCHED)

    def recorded_succeeded(self) -> WatchState:
        """Its record says it succeeded: fetched at once (WATCHED -> FETCHING, its final marker taken as seen)."""
        return replace(self, phase=Phase.FETCHING, marker=Marker.SUCCEEDED)

    def after_scan(self) -> WatchState:
        return replace(self, scanned=True)

    def fetch_failed(self) -> WatchState:
        """Its files could not be fetched: the next poll tries again (FETCHING -> WATCHED)."""
        return replace(self, phase=Phase.WATCHED)

    def no_final_marker(self) -> WatchState:
        """The final marker seen was an earlier run's event line: look at its markers again (FETCHING -> WATCHED)."""
        return replace(self, phase=Phase.WATCHED, marker=None, scanned=False)

    def ended(self) -> WatchState:
        return replace(self, phase=Phase.ENDED)


def unchanged(state: WatchState, *, remote_id: str | None, seen: Sequence[str | None],
              states: Mapping[str, QueueState] | None, listed: bool) -> bool:
    """True when :func:`observe` would keep ``state`` as it is and ask nothing of the loop: no marker
    seen for the job, no final marker waiting to be fetched again, and (a poll that listed the queue)
    the job listed active, as before. The poll loop skips such jobs, so a poll's work grows with what
    changed, not with the number of jobs watched (issue 16)."""
    if any(seen) or (state.marker is not None and state.marker.final):
        return False
    if not listed:
        return True
    return (state.queue_active and state.missing_since is None
            and (states is None or states.get(remote_id or "") in ACTIVE_STATES))


def observe(state: WatchState, *, remote_id: str | None, seen: Sequence[str | None],
            states: Mapping[str, QueueState] | None, listed: bool, now: float, grace: float,
            where: str, detail: str = "", ending: Ending | None = None) -> tuple[WatchState, Verdict, Step]:
    """One poll's look at one watched job: its new state, the verdict, and what the loop does next.

    :param seen: markers this poll saw for it, in order (its directory's, then the event log's;
        None: none); a final marker, once seen, is never replaced
    :param states: the queue listing (None: not listed, or the scheduler did not answer)
    :param listed: this poll listed the queue (only then can the job be found missing from it)
    :param now: ``time.monotonic()``
    :param detail: what the scheduler's accounting says of how it ended, for the message
    :param ending: why it ended, by the scheduler's accounting (see :func:`classify`)
    """
    marker = state.marker
    for name in seen:
        found = _BY_NAME.get(name or "")
        if found is not None and (marker is None or not marker.final):
            marker = found
    queue_active = state.queue_active
    if listed:
        queue_active = states is None or (states.get(remote_id or "") in ACTIVE_STATES)
    missing_for = None if state.missing_since is None else now - state.missing_since
    verdict = classify(remote_id=remote_id, marker=marker, states=states, missing_for=missing_for, grace=grace,
                       where=where, detail=detail, ending=ending)
    changes: dict[str, Any] = {"marker": marker, "queue_active": queue_active}  # one new state per look
    if verdict.kind is VerdictKind.FINISHED:
        return replace(state, phase=Phase.FETCHING, **changes), verdict, Step.FETCH
    if listed:  # (when the queue was not asked, only the markers spoke)
        missing = verdict.kind is VerdictKind.MISSING
        changes["missing_since"] = (state.missing_since or now) if missing else None
    step = Step.NOTHING
    if verdict.kind is VerdictKind.DIED:
        changes["phase"], step = Phase.ENDED, Step.DIED
    elif verdict.started and not state.started:
        changes["started_at"], step = now, Step.STARTED
    return replace(state, **changes), verdict, step
