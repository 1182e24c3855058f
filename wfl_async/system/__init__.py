"""Systems: one configured machine each, with a submit loop and a poll loop (see :mod:`.system`)."""

from __future__ import annotations

from .requests import JobOutcome, QueueSurvey, SubmitRequest, Watch
from .system import System

__all__ = ["JobOutcome", "QueueSurvey", "SubmitRequest", "System", "Watch"]
