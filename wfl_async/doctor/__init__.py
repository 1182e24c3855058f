"""Is a system ready for jobs? The checks behind ``wfl-async doctor`` and the first submission.

:func:`check_system` asks a system, in one command over its shared connection, everything a
queued job will rely on (host reachable, scheduler answering, run directory writable, the
remote Python importing wfl_async with versions whose pickles this driver can read) and
returns one :class:`Problem` per thing that is wrong. :func:`ensure_system_ready` runs it once
per system and session before the first submission and raises :class:`SystemNotReadyError`
naming the problems, so a broken system fails at once instead of job by job.
"""

from __future__ import annotations

from ..errors import SystemNotReadyError
from ..system.problems import Problem, Severity
from .check import check_system
from .first_submission import SKIP_ENV_VAR, ensure_system_ready

__all__ = ["SKIP_ENV_VAR", "Problem", "Severity", "SystemNotReadyError", "check_system", "ensure_system_ready"]
