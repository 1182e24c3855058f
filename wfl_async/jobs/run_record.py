"""Where and when a job ran, as its own files tell: the started marker's content and the markers' times.

The worker writes ``<host> <pack worker>`` into the started marker (the pack worker is empty
for a job of its own); the started and final markers come back with the result, their
modification times kept, so the driver records the run's start and end as the node saw them
(not when a poll happened to look). Imported by the remote worker too: standard library only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from . import layout
from .job_files import JobFiles, job_files

__all__ = ["PACK_WORKER_ENV", "last_error_line", "read_run_record", "started_marker_text"]

PACK_WORKER_ENV = "WFL_ASYNC_PACK_WORKER"
"""Set by a pack's worker job to its own name, so each chunk it runs records it."""
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
_ERRORISH = re.compile(r"error|killed|cannot|not found|denied", re.IGNORECASE)


def last_error_line(text: str) -> str | None:
    """The last exception line (``SomeError: ...``), else the last line that sounds like an error."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for pattern in (_EXCEPTION_LINE, _ERRORISH):
        for line in reversed(lines):
            if pattern.search(line):
                return line[:500]
    return None


def started_marker_text() -> str:
    """What the worker writes into the started marker: where it runs."""
    return f"{os.uname().nodename} {os.environ.get(PACK_WORKER_ENV, '')}".strip() + "\n"


def read_run_record(job_dir: Path | JobFiles) -> dict[str, Any]:
    """``started_at``, ``finished_at``, ``worker`` and, for a failed job, ``message`` (its worker log's
    last error line) of a fetched job directory (those it has)."""
    files = job_files(job_dir)
    found: dict[str, Any] = {}
    started_at = files.mtime(layout.STARTED)
    if started_at is not None:
        found["started_at"] = started_at
        words = (files.read(layout.STARTED) or b"").decode(errors="replace").split()
        if words:
            found["worker"] = "/".join(words[:2])
    for name in layout.FINAL_MARKERS:
        finished_at = files.mtime(name)
        if finished_at is None:
            continue
        found["finished_at"] = finished_at
        if name == layout.FAILED:
            log = files.read(layout.WORKER_LOG)
            if log is not None:
                found["message"] = last_error_line(log.decode(errors="replace"))
        break
    return found
