"""``_ConfigSet_loc`` strings: where a configuration sits in a nested input.

A location is a sequence of integer indices written as ``" / 0 / 3"`` (one ``" / i"`` per
nesting level, outermost first), exactly the text wfl stores in ``Atoms.info``. Files
written by either package carry it, so it is the one format both must agree on.
"""

from __future__ import annotations

LOC_KEY = "_ConfigSet_loc"
LOC_SEP = " / "

__all__ = ["LOC_KEY", "LOC_SEP", "loc_join", "loc_key"]


def loc_key(loc: str | None) -> tuple[int, ...]:
    """Parse a location into its indices, e.g. ``" / 2 / 0"`` -> ``(2, 0)``; ``""``/None -> ``()``.

    Tuples sort lexicographically, which is the order in which a ConfigSet iterates its
    configurations, so this is also the ordering key used by :class:`OutputSpec`.

    :raises ValueError: a component is not an integer
    """
    if not loc:
        return ()
    parts = loc.split(LOC_SEP)
    if parts[0] != "":
        raise ValueError(f"_ConfigSet_loc {loc!r} must start with {LOC_SEP!r}")
    try:
        return tuple(int(p) for p in parts[1:])
    except ValueError as exc:
        raise ValueError(f"_ConfigSet_loc indices must be integers, got {loc!r}") from exc


def loc_join(indices: tuple[int, ...] | list[int]) -> str:
    """Inverse of :func:`loc_key`: ``(2, 0)`` -> ``" / 2 / 0"``."""
    return "".join(LOC_SEP + str(i) for i in indices)
