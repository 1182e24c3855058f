"""Placement over several systems: one call's chunks spread where they start soonest, and chunks
still waiting on a slow system moved, once, to a faster one (docs/multi_system.md).

``choices`` reads a ``sys_name`` that lists systems; ``decide`` is the pure rule (where the next
chunks go, which waiting chunks move); ``measure`` reads each system's recent queue wait and
throughput from the jobs database; ``mover`` takes a chunk back and records the move before it is
made; ``call`` runs one call's chunks over the usable systems.
"""

from .choices import Choice, parse_sys_names

__all__ = ["Choice", "parse_sys_names"]
