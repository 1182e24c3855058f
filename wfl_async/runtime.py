"""The old name of :mod:`wfl_async.session` (``Runtime``, ``runtime_scope``), kept for existing callers."""

from __future__ import annotations

from .session import DB_NAME, Session, session_scope

__all__ = ["DB_NAME", "Runtime", "runtime_scope"]

Runtime = Session
runtime_scope = session_scope
