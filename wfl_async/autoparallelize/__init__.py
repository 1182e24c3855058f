"""Autoparallelization: apply an operation to many configurations, locally or as queued jobs.

Drop-in for ``wfl.autoparallelize``. See :mod:`.operation` for the three ways every
operation can be called (sync, ``.aio``, ``.iter``).
"""

from .autoparainfo import AutoparaInfo
from .base import autoparallelize, autoparallelize_docstring
from .chunk import ChunkResult
from .operation import AutoparaOperation
from .remoteinfo import RemoteInfo

__all__ = [
    "AutoparaInfo",
    "AutoparaOperation",
    "ChunkResult",
    "RemoteInfo",
    "autoparallelize",
    "autoparallelize_docstring",
]
