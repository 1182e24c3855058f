"""Moving waiting chunks to another system: certain they never run where they were, recorded first.

Order (each step safe to repeat, so a driver killed anywhere is finished by the next run,
:func:`resolve`), for a batch of chunks of one source system at a time (a few commands whatever
their number):

1. the jobs database records each move under way (``moved_to``, ``move_reason``), in one transaction;
2. the chunks are taken back where they wait: a packed chunk's queue entry is taken out of its
   pack's queue in one rename (:func:`~wfl_async.pack.queue.take_back_command`; it fails if a
   worker took it first); a queued job is cancelled (unless the scheduler lists it running, or
   its directory holds a marker), the scheduler is asked until it no longer lists it, then its
   directory is read again: no started marker means its function never began (the worker
   writes that marker before calling it);
3. one transaction records the outcomes: a chunk taken back becomes ``not_submitted`` on the
   target system (the next claim submits it there afresh, in a clean directory); a chunk kept
   (it started, or a worker has it) drops its move and is waited for where it is.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from ..errors import SchedulerError, TransportError
from ..jobs.database import JobRecord, JobsDatabase
from ..jobs.route import RouteKind
from ..jobs.states import ACTIVE_STATES, JobStatus, Marker, QueueState
from ..pack.queue import TAKEN_BACK, take_back_command
from ..system import System

__all__ = ["CONFIRM_SECONDS", "Outcome", "finish", "record_intents", "resolve", "take_back"]

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 60.0
"""How long the scheduler is asked, after a cancel, until it no longer lists the jobs."""
_PER_COMMAND = 200
"""Packed chunks taken back by one command (their names are on its command line)."""


@dataclass(frozen=True)
class Outcome:
    """What a take-back found: ``moved`` (it will run on the target) or kept where it was, and why."""

    moved: bool
    why: str


async def record_intents(db: JobsDatabase, moves: Sequence[tuple[str, str, str]]) -> None:
    """Step 1 for ``(key, target, reason)`` moves: under way (before anything is done to the chunks)."""
    await db.update_many((key, {"moved_to": target, "move_reason": reason}) for key, target, reason in moves)


async def take_back(source: System, records: Sequence[JobRecord]) -> dict[str, Outcome]:
    """Step 2 on ``source`` for ``records`` (chunks submitted there): key -> outcome."""
    outcomes = {r.key: Outcome(True, "it was never submitted there") for r in records
                if r.remote_id is None or r.remote_root is None}
    submitted = [r for r in records if r.key not in outcomes]
    outcomes.update(await _take_back_packed(source, [r for r in submitted if r.route is RouteKind.PACKED]))
    outcomes.update(await _take_back_queued(source, [r for r in submitted if r.route is not RouteKind.PACKED]))
    return outcomes


async def _take_back_packed(source: System, records: Sequence[JobRecord]) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    by_root: dict[str, list[JobRecord]] = {}
    for r in records:
        if r.pack_id is None:
            outcomes[r.key] = Outcome(False, "its pack is not recorded")
        else:
            by_root.setdefault(r.remote_root or "", []).append(r)
    for root, some in by_root.items():
        for start in range(0, len(some), _PER_COMMAND):
            part = some[start:start + _PER_COMMAND]
            lines = "; ".join(f"echo \"$({take_back_command(r.pack_id or '', r.job_dir)})\"" for r in part)
            done = await source.transport.run(f"cd {shlex.quote(root)} && {{ {lines}; }}", kind="cancel", retry=True)
            answers = done.stdout.decode(errors="replace").split()
            for r, answer in zip(part, answers, strict=False):
                outcomes[r.key] = Outcome(True, "its entry was taken out of the pack's queue") if answer == TAKEN_BACK \
                    else Outcome(False, "a worker had taken it")
            for r in part[len(answers):]:
                outcomes[r.key] = Outcome(False, "the take-back command gave no answer for it")
    return outcomes


async def _take_back_queued(source: System, records: Sequence[JobRecord]) -> dict[str, Outcome]:
    if not records:
        return {}
    outcomes: dict[str, Outcome] = {}
    markers = await _markers(source, records)
    states = await source.queue_states()
    to_cancel = []
    for r in records:
        if r.job_dir in markers:
            outcomes[r.key] = Outcome(False, f"it had started ({markers[r.job_dir]} marker)")
        elif states.get(r.remote_id or "") is QueueState.RUNNING:
            outcomes[r.key] = Outcome(False, "the scheduler lists it running")
        else:
            to_cancel.append(r)
    if not to_cancel:
        return outcomes
    await source.control("cancel", [r.remote_id or "" for r in to_cancel])
    listed = await _still_listed(source, {r.remote_id or "" for r in to_cancel})
    after = await _markers(source, to_cancel)
    for r in to_cancel:
        marker = after.get(r.job_dir)
        if r.remote_id in listed:
            outcomes[r.key] = Outcome(False, f"the scheduler still listed it {CONFIRM_SECONDS:.0f} s after the cancel")
        elif marker is not None and Marker(marker).final:
            outcomes[r.key] = Outcome(False, "it finished before the cancel")
        elif marker is not None:
            # it started between the look and the cancel, and the cancel killed it: it never finished
            # there, so it runs once, on the target
            log.warning("chunk %s started on %s as it was cancelled (killed before finishing); it moves",
                        r.name, source.name)
            outcomes[r.key] = Outcome(True, "cancelled as it started, before finishing")
        else:
            outcomes[r.key] = Outcome(True, "cancelled while queued; the scheduler no longer lists it and it "
                                            "never started")
    return outcomes


async def _markers(source: System, records: Sequence[JobRecord]) -> dict[str, str]:
    found: dict[str, str] = {}
    for root in {r.remote_root for r in records if r.remote_root}:
        found.update(await source.markers([r.job_dir for r in records if r.remote_root == root], root))
    return found


async def _still_listed(source: System, remote_ids: set[str]) -> set[str]:
    """Ask the scheduler (bounded, backing off) until it lists none of ``remote_ids`` as active."""
    pause, waited = 0.5, 0.0
    while True:
        states = await source.queue_states()
        listed = {i for i in remote_ids if states.get(i) in ACTIVE_STATES}
        if not listed or waited >= CONFIRM_SECONDS:
            return listed
        await anyio.sleep(pause)
        waited += pause
        pause = min(pause * 2, 5.0)


async def finish(db: JobsDatabase, records: Sequence[JobRecord], source: str, outcomes: dict[str, Outcome]) -> None:
    """Step 3: record where each chunk goes, all in one transaction (a rerun sees each move done or not)."""
    updates = []
    for r in records:
        outcome, target = outcomes[r.key], r.moved_to
        if outcome.moved:
            updates.append((r.key, {"status": JobStatus.NOT_SUBMITTED, "system": target, "remote_id": None,
                                    "moved_to": None, "moved_from": source,
                                    "message": f"moved from {source} to {target}: {outcome.why}"}))
            log.info("chunk %s moved from %s to %s: %s (%s)", r.name, source, target, r.move_reason, outcome.why)
        else:
            updates.append((r.key, {"moved_to": None, "move_reason": None}))
            log.info("chunk %s stays on %s (not moved to %s): %s", r.name, source, target, outcome.why)
    await db.update_many(updates)


async def move(db: JobsDatabase, source: System, records: Sequence[JobRecord]) -> dict[str, Outcome]:
    """Steps 2 and 3 for ``records`` (their moves recorded, all from ``source``)."""
    try:
        outcomes = await take_back(source, records)
    except (SchedulerError, TransportError) as exc:
        # nothing is known for certain: the moves stay recorded as under way, for the next look or run
        raise SchedulerError(f"could not take {len(records)} chunk(s) back from {source.name} ({exc}); their "
                             f"moves stay recorded and are finished by a rerun") from exc
    await finish(db, records, source.name, outcomes)
    return outcomes


async def resolve(db: JobsDatabase, source: System, records: Sequence[JobRecord]) -> None:
    """Moves recorded as under way (a driver stopped in the middle): take back again and finish them."""
    for r in records:
        log.info("chunk %s: a move from %s to %s was under way when the last run stopped; finishing it",
                 r.name, r.system, r.moved_to)
    await move(db, source, records)
