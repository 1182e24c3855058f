"""Systems: one configured machine each, batching submissions and coalescing polls."""

from __future__ import annotations

from .requests import JobOutcome, SubmitRequest, Watch
from .system import System

__all__ = ["JobOutcome", "SubmitRequest", "System", "Watch"]
