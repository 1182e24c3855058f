"""One thing wrong with a system: what, and how to fix it, on one line.

Here, in the system layer, because :meth:`System.remote_root <wfl_async.system.system.System.remote_root>`
reports an unusable run directory with the same wording as ``wfl-async doctor``, which sits above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..failures import permanent_cause

__all__ = ["Problem", "Severity", "rundir_problem"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """A failed check. ``error``: jobs cannot work; ``warning``: they may, but look at it."""

    system: str
    severity: Severity
    check: str
    """Which check found it: ``connect``, ``scheduler``, ``rundir``, ``python``, ``versions``."""
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.severity}: system {self.system!r}: {self.problem}. Fix: {self.fix}"


def rundir_problem(system: str, path: str, detail: str) -> Problem:
    """The one wording of "the run directory is not usable" (the doctor and ``System.remote_root`` share it)."""
    cause = permanent_cause(detail)  # a full disk is fixed by freeing space, not by another rundir only
    detail = " ".join(detail.split())[-300:]
    return Problem(system, "error", "rundir", f"run directory {path!r} cannot be created or written "
                   f"({cause.cause + ': ' if cause else ''}{detail})",
                   cause.fix_for(path) if cause and cause.full else
                   f"set \"rundir\" of system {system!r} in config.json to a directory you can write "
                   f"(relative paths are relative to the remote home)")
