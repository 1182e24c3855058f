"""States of a job as a queueing system reports it.

A job the scheduler no longer lists has *no* state here: it is not "done". Only the
job's final marker file says done (see ``wfl_async.jobs.markers``); a job missing from
the queue without a marker is called died only after a grace period, because queue
records vanish (Slurm's ``MinJobAge``) and shared filesystems lag.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["QueueState", "ACTIVE_STATES"]


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
    """Ended by the scheduler: FAILED, TIMEOUT, CANCELLED, NODE_FAIL, OUT_OF_MEMORY, SGE ``Eqw``."""
    UNKNOWN = "unknown"
    """A state this code does not know; treated as still active, with a warning."""


ACTIVE_STATES = frozenset({QueueState.QUEUED, QueueState.HELD, QueueState.RUNNING, QueueState.UNKNOWN})
"""States in which the job may still write its marker."""
