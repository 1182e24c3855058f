"""Packing's decisions, pure: which workers are dead, which chunks go back, how many workers to start.

The coordinator (:mod:`.coordinator`) keeps a :class:`WorkerState` per worker job and, after
each listing of a pack's queue, asks :func:`judge` what it means; it then does what the
:class:`PackDecision` says (one requeue command, or more workers through the submit loop). A
worker missing from the scheduler's listing is dead by the same rule as any job
(:func:`~wfl_async.jobs.states.classify`, its ``died_grace_seconds``): a listing taken while its
``sbatch`` was still running does not have it yet. No I/O and no clock here: ``now`` is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from ..jobs.states import QueueState, VerdictKind, classify, past_grace
from .queue import PackQueue

__all__ = ["UNSEEN_GRACE", "PackDecision", "WorkerState", "is_alive", "judge", "workers_to_start"]

UNSEEN_GRACE = 30.0
"""Seconds a worker this process submitted counts as alive before any listing showed it."""


@dataclass(frozen=True)
class WorkerState:
    """What the driver knows of one worker job."""

    submitted_at: float
    """``time.monotonic()`` when this process submitted it (``-inf``: found in a listing, an earlier run's)."""
    remote_id: str | None = None
    seen: bool = False
    """A listing of its pack has shown it."""
    missing_since: float | None = None
    """When a listing first had it not active (queued, held, running) in the scheduler's queue."""
    first_unknown: float | None = None
    """When a listing first showed it without any queue id (its submit answer lost)."""
    walltime: float = math.inf
    """The walltime (s) it was submitted with (``inf``: not known, an earlier run's)."""


@dataclass(frozen=True)
class PackDecision:
    """What one listing of a pack's queue calls for."""

    workers: dict[str, WorkerState]
    """Every worker still counted, updated by the listing."""
    found: tuple[str, ...] = ()
    """Workers listed that this process did not submit (an earlier run's): they take room in the queue."""
    gone: tuple[str, ...] = ()
    """Workers that exited of their own accord (or were retired, or never showed): forgotten."""
    dead: tuple[str, ...] = ()
    """Workers gone from the scheduler's queue without exiting, for longer than the grace."""
    orphans: tuple[tuple[str, str], ...] = ()
    """``(job dir, worker)`` of chunks taken by a dead or unknown worker: to be put back."""

    @property
    def requeue(self) -> bool:
        return bool(self.dead or self.orphans)


def patience(grace: float) -> float:
    """Seconds a worker may go unseen: at least :data:`UNSEEN_GRACE`, and never shorter than a job's grace."""
    return max(UNSEEN_GRACE, grace)


def judge(workers: Mapping[str, WorkerState], queue: PackQueue, states: Mapping[str, QueueState] | None, *,
          now: float, grace: float, where: str, worker_id: Callable[[str, str | None], str | None]) -> PackDecision:
    """What one listing of a pack's ``queue`` says about its ``workers``.

    :param states: the scheduler's listing from the same command (None: it did not answer;
        then no worker is missing and no chunk is an orphan)
    :param grace: the system's ``died_grace_seconds``
    :param worker_id: a worker's queue id from its submit answer and its own id (None: unknown)
    """
    updated = dict(workers)
    found = tuple(name for name in queue.workers if name not in updated)
    for name, answer in queue.workers.items():
        # a worker of an earlier run is in the queue, so it counts
        worker = updated.get(name) or WorkerState(submitted_at=-math.inf)
        worker = replace(worker, seen=True, remote_id=worker.remote_id or worker_id(answer, queue.own_ids.get(name)))
        updated[name] = _listed(worker, states, now=now, grace=grace, where=where)
    gone = tuple(n for n, w in updated.items() if n not in queue.workers
                 and (w.seen or now - w.submitted_at > patience(grace)))
    for name in gone:
        del updated[name]
    dead = tuple(sorted(n for n, w in updated.items() if w.missing_since is not None
                        and past_grace(now - w.missing_since, grace)))
    orphans = tuple((job_dir, w) for job_dir, w in queue.taken.items()
                    if w in dead or (w not in updated and states is not None))
    return PackDecision(updated, found, gone, dead, orphans)


def _listed(worker: WorkerState, states: Mapping[str, QueueState] | None, *, now: float, grace: float,
            where: str) -> WorkerState:
    """``worker`` as a listing of its pack shows it: missing from the scheduler's queue since when, if at all."""
    if worker.remote_id is None:  # submitted, its answer lost, not started: cannot be judged
        return replace(worker, first_unknown=worker.first_unknown or now)
    missing_for = None if worker.missing_since is None else now - worker.missing_since
    verdict = classify(remote_id=worker.remote_id, marker=None, states=states, missing_for=missing_for, grace=grace,
                       where=where)
    if verdict.kind is VerdictKind.DIED and missing_for is None:  # listed as ended (TIMEOUT): dead at once
        return replace(worker, missing_since=-math.inf)
    active = verdict.kind is VerdictKind.ACTIVE
    return replace(worker, missing_since=None if active else (worker.missing_since or now))


def is_alive(worker: WorkerState, *, now: float, grace: float) -> bool:
    """Whether ``worker`` counts as alive (queued or running) now, as last seen."""
    if not worker.seen:
        return now - worker.submitted_at < patience(grace)
    if worker.remote_id is None:  # counted for a while, never called dead: its chunks are not put back
        return worker.first_unknown is None or now - worker.first_unknown < 4 * patience(grace)
    return worker.missing_since is None or not past_grace(now - worker.missing_since, grace)


def workers_to_start(target: int, alive: int, queued: int) -> int:
    """Workers to submit now: up to ``target`` alive, but no more than there are untaken chunks for.

    A worker can only help with chunks nobody has taken: those being run have a worker alive
    (or are put back, and so queued, when theirs dies).
    """
    return max(0, min(target, alive + queued) - alive)
