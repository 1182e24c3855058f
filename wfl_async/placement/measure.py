"""Each system's recent queue wait and throughput, from the jobs database (this run's and earlier ones')."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from ..jobs.database import JobsDatabase
from .decide import Measured

__all__ = ["RECENT", "measure", "measured_from"]

RECENT = 50
"""How many of a system's last started jobs its figures come from."""


def measured_from(timings: Iterable[tuple[float, float, float | None]]) -> Measured:
    """Median queue wait (submit -> start) and chunks finished per second over their span."""
    rows = list(timings)
    if not rows:
        return Measured()
    wait = statistics.median(max(0.0, started - submitted) for submitted, started, _ in rows)
    finished = [f for _, _, f in rows if f is not None]
    span = max(finished, default=0.0) - min(s for s, _, _ in rows)
    return Measured(wait, len(finished) / span if finished and span > 0 else None)


async def measure(db: JobsDatabase, systems: Iterable[str]) -> dict[str, Measured]:
    """Every system's figures (unknown where it ran nothing yet)."""
    return {name: measured_from(await db.recent_timings(name, RECENT)) for name in systems}
