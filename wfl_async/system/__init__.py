"""Systems: one configured machine each (:mod:`.system`), with a submit loop (:mod:`.submit_loop`) and a
poll loop (:mod:`.poll_loop`)."""

from __future__ import annotations

from .requests import JobOutcome, QueueSurvey, SubmitRequest, Watch
from .system import System

__all__ = ["JobOutcome", "QueueSurvey", "SubmitRequest", "System", "Watch"]
