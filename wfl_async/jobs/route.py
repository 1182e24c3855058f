"""How a job runs on its system, as recorded in the jobs database (the ``route`` column).

The job layer decides it once, when a job is prepared (:class:`wfl_async.job.PreparedJob`'s
``route``), and the database keeps it, so that a rerun, the queue window and the command line
know whether a job is a scheduler job of its own without reading it from its remote id.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RouteKind"]


class RouteKind(StrEnum):
    DIRECT = "direct"
    """A scheduler job of its own, submitted by the system's submit loop."""
    ARRAY = "array"
    """A scheduler job of its own that asks to go as a task of a job array (:mod:`wfl_async.system.submit`)."""
    PACKED = "packed"
    """A chunk run by its pack's worker jobs (:mod:`wfl_async.pack`): no scheduler job of its own, so it
    takes no room in the queue window (its workers do) and ``scancel`` cannot reach it."""

    @property
    def own_job(self) -> bool:
        """It is a scheduler job of its own (it takes room in the queue window)."""
        return self is not RouteKind.PACKED
