"""wfl_async: wfl-style operations as many concurrent queued jobs.

The names users reach for first are here: ``from wfl_async import RemoteJob, ConfigSet, OutputSpec,
session_scope``. They are looked up lazily (PEP 562), only when asked for: the remote worker
imports ``wfl_async.jobs.worker`` inside every queued job, and each job's Python start-up is the
floor of end-to-end time, so importing this package pulls in nothing (no anyio, asyncssh or ase).
``autoparallelize`` is not among them: that name is the subpackage ``wfl_async.autoparallelize``
(``from wfl_async.autoparallelize import autoparallelize``, as in wfl).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .configset import ConfigSet, OutputSpec
    from .job import RemoteJob
    from .session import session_scope

__version__ = "0.1.0"
__all__ = ["ConfigSet", "OutputSpec", "RemoteJob", "__version__", "session_scope"]

_LAZY = {"ConfigSet": ".configset", "OutputSpec": ".configset", "RemoteJob": ".job", "session_scope": ".session"}
"""Each lazy name and the module that defines it."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
