"""Where and when a job ran, as its own files tell: the started marker's content and the markers' times.

The worker writes ``<host> <pack worker>`` into the started marker (the pack worker is empty
for a job of its own); the started and final markers come back with the result, their
modification times kept, so the driver records the run's start and end as the node saw them
(not when a poll happened to look). Imported by the remote worker too: standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import layout

__all__ = ["PACK_WORKER_ENV", "read_run_record", "started_marker_text"]

PACK_WORKER_ENV = "WFL_ASYNC_PACK_WORKER"
"""Set by a pack's worker job to its own name, so each chunk it runs records it."""


def started_marker_text() -> str:
    """What the worker writes into the started marker: where it runs."""
    return f"{os.uname().nodename} {os.environ.get(PACK_WORKER_ENV, '')}".strip() + "\n"


def read_run_record(job_dir: Path) -> dict[str, Any]:
    """``started_at``, ``finished_at`` and ``worker`` of a fetched job directory (those it has)."""
    found: dict[str, Any] = {}
    started = job_dir / layout.STARTED
    try:
        found["started_at"] = started.stat().st_mtime
        words = started.read_text(errors="replace").split()
    except OSError:
        words = []
    if words:
        found["worker"] = "/".join(words[:2])
    for name in layout.FINAL_MARKERS:
        try:
            found["finished_at"] = (job_dir / name).stat().st_mtime
            break
        except OSError:
            continue
    return found
