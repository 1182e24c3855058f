"""The old home of :class:`RemoteJob`, kept because users import it from here.

RemoteJob lives in :mod:`wfl_async.job`, above the session; ``jobs/`` is the floor data
layer and imports nothing above it, so the names are looked up lazily (PEP 562), only when
someone asks for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..job import PreparedJob, RemoteJob

__all__ = ["PreparedJob", "RemoteJob"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from .. import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
