"""Whether this process is a queued job: the job worker says so before it loads its task.

Its own module (no imports) so that the job worker, which must stay light, can name it.
"""

from __future__ import annotations

import os

__all__ = ["IN_JOB", "in_job"]

IN_JOB = "WFL_ASYNC_IN_JOB"
"""Environment variable the job worker sets before it unpickles its task."""


def in_job() -> bool:
    """True in a queued job's process (and the pool subprocesses it starts)."""
    return bool(os.environ.get(IN_JOB))
