"""Systems: one configured machine each, batching submissions and coalescing polls."""

from __future__ import annotations

from .requests import JobOutcome, QueueSurvey, SubmitRequest, Watch
from .system import System

__all__ = ["JobOutcome", "QueueSurvey", "SubmitRequest", "System", "Watch"]
