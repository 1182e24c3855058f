"""Check each system once per session, before its first submission, and fail fast if it is broken.

Without this, a system whose Python lacks wfl_async (or has another numpy) accepts every
job, and each one "dies" after it left the queue. One check per system per session costs
one command; every job waiting on it shares its answer.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING

import anyio

from ..errors import SystemNotReadyError
from ..system.problems import Problem
from .check import check_system

if TYPE_CHECKING:
    from ..system import System

__all__ = ["SKIP_ENV_VAR", "ensure_system_ready"]

log = logging.getLogger(__name__)

SKIP_ENV_VAR = "WFL_ASYNC_SKIP_SYSTEM_CHECK"
"""Set to 1 to submit without the check (e.g. a cluster whose login node has no Python)."""


class _Verdict:
    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.problems: list[Problem] | None = None


# keyed by the System object, which lives exactly as long as its session
_verdicts: weakref.WeakKeyDictionary[System, _Verdict] = weakref.WeakKeyDictionary()


async def ensure_system_ready(system: System) -> None:
    """Run :func:`check_system` once for ``system`` (this session) and raise if it found errors.

    Warnings are logged once. Every later call returns (or raises) at once.

    :raises SystemNotReadyError: the system cannot run jobs; the message has one line per problem
    """
    if os.environ.get(SKIP_ENV_VAR, "") not in ("", "0"):
        return
    verdict = _verdicts.get(system) or _verdicts.setdefault(system, _Verdict())  # a lock made once, not per call
    if verdict.problems is None:
        async with verdict.lock:
            if verdict.problems is None:
                problems = await check_system(system)
                for problem in problems:
                    if problem.severity == "warning":
                        log.warning("%s", problem)
                verdict.problems = problems
    errors = [p for p in verdict.problems if p.severity == "error"]
    if errors:
        raise SystemNotReadyError(system.name, errors)
