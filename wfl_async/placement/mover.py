"""Moving one waiting chunk to another system: certain it never runs where it was, recorded first.

Order (each step safe to repeat, so a driver killed anywhere is finished by the next run,
:func:`resolve`):

1. the jobs database records the move under way (``moved_to``, ``move_reason``);
2. the chunk is taken back where it waits: a packed chunk's queue entry is taken out of the pack's
   queue in one rename (:func:`~wfl_async.pack.queue.take_back_command`; it fails if a worker took
   it first); a queued job is cancelled, and the scheduler is asked until it no longer lists it,
   then its directory is read: no started marker means its function never began (the worker
   writes that marker before calling it);
3. taken back: one update makes the job ``not_submitted`` on the target system, so the next claim
   submits it there afresh; kept (it started, or a worker has it): the move is dropped and the
   chunk is waited for where it is.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass

import anyio

from ..errors import SchedulerError, TransportError
from ..jobs.database import JobRecord, JobsDatabase
from ..jobs.route import RouteKind
from ..jobs.states import ACTIVE_STATES, JobStatus, Marker, QueueState
from ..pack.queue import TAKEN_BACK, take_back_command
from ..system import System

__all__ = ["CONFIRM_SECONDS", "Outcome", "finish", "record_intent", "resolve", "take_back"]

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 60.0
"""How long the scheduler is asked, after a cancel, until it no longer lists the job."""


@dataclass(frozen=True)
class Outcome:
    """What a take-back found: ``moved`` (it will run on ``target``) or kept where it was, and why."""

    moved: bool
    why: str


async def record_intent(db: JobsDatabase, key: str, target: str, reason: str) -> None:
    """Step 1: the move is under way (before anything is done to the chunk)."""
    await db.update(key, moved_to=target, move_reason=reason)


async def take_back(source: System, record: JobRecord) -> Outcome:
    """Step 2 on ``source``: is the chunk out of its queue for good and never started there?"""
    if record.remote_id is None or record.remote_root is None:
        return Outcome(True, "it was never submitted there")
    if record.route is RouteKind.PACKED:
        if record.pack_id is None:
            return Outcome(False, "its pack is not recorded")
        done = await source.transport.run(f"cd {shlex.quote(record.remote_root)} && "
                                          f"{take_back_command(record.pack_id, record.job_dir)}", kind="cancel",
                                          retry=True)
        if done.stdout.decode(errors="replace").strip() != TAKEN_BACK:
            return Outcome(False, "a worker had taken it")
        return Outcome(True, "its queue entry was taken out of the pack's queue")
    markers = await source.markers([record.job_dir], record.remote_root)
    if markers.get(record.job_dir):
        return Outcome(False, f"it had started ({markers[record.job_dir]} marker)")
    before = (await source.queue_states()).get(record.remote_id)
    if before is QueueState.RUNNING:
        return Outcome(False, "the scheduler lists it running")
    await source.control("cancel", [record.remote_id])
    gone = await _gone(source, record.remote_id)
    if not gone:
        return Outcome(False, f"the scheduler still listed it {CONFIRM_SECONDS:.0f} s after the cancel")
    after = await source.markers([record.job_dir], record.remote_root)
    marker = after.get(record.job_dir)
    if marker is not None and Marker(marker).final:
        return Outcome(False, "it finished before the cancel")
    if marker is not None:
        # it started between the look and the cancel, and the cancel killed it: it never finished
        # there, so it runs once, on the target
        log.warning("chunk %s started on %s as it was cancelled (killed before finishing); it moves",
                    record.job_dir, source.name)
        return Outcome(True, "cancelled as it started, before finishing")
    return Outcome(True, "cancelled while queued; the scheduler no longer lists it and it never started")


async def _gone(source: System, remote_id: str) -> bool:
    """Ask the scheduler (bounded, backing off) until it no longer lists ``remote_id`` as active."""
    pause, waited = 0.5, 0.0
    while waited < CONFIRM_SECONDS:
        if (await source.queue_states()).get(remote_id) not in ACTIVE_STATES:
            return True
        await anyio.sleep(pause)
        waited += pause
        pause = min(pause * 2, 5.0)
    return False


async def finish(db: JobsDatabase, record: JobRecord, source: str, target: str, outcome: Outcome) -> None:
    """Step 3: record where the chunk goes (one update, so a rerun sees the move done or not)."""
    if outcome.moved:
        await db.update(record.key, status=JobStatus.NOT_SUBMITTED, system=target, remote_id=None, moved_to=None,
                        moved_from=source, message=f"moved from {source} to {target}: {outcome.why}")
        log.info("chunk %s moved from %s to %s: %s (%s)", record.name, source, target, record.move_reason,
                 outcome.why)
    else:
        await db.update(record.key, moved_to=None, move_reason=None)
        log.info("chunk %s stays on %s (not moved to %s): %s", record.name, source, target, outcome.why)


async def resolve(db: JobsDatabase, source: System, record: JobRecord) -> JobRecord:
    """A move recorded as under way (a driver stopped in the middle): take back again and finish it.

    :returns: the record as it is now (the chunk moved, or kept where it was)
    """
    assert record.moved_to is not None
    log.info("chunk %s: a move from %s to %s was under way when the last run stopped; finishing it",
             record.name, record.system, record.moved_to)
    try:
        outcome = await take_back(source, record)
    except (SchedulerError, TransportError) as exc:
        raise SchedulerError(f"chunk {record.name}: could not finish its move from {source.name} to "
                             f"{record.moved_to} ({exc}); rerun once {source.name} answers") from exc
    await finish(db, record, source.name, record.moved_to, outcome)
    new = await db.get(record.key)
    assert new is not None
    return new
