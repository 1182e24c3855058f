"""What a died job's worker log says: its last error line, for the :class:`JobDiedError` message.

A job that left the queue without a final marker usually died before or inside the worker
(``ModuleNotFoundError`` for wfl_async, a task that does not unpickle, killed for memory);
its worker log holds the reason. Fetching it costs one command, paid only by died jobs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TransportError
from ..jobs import layout

if TYPE_CHECKING:
    from ..system import System

__all__ = ["died_job_hint", "last_error_line"]

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


async def died_job_hint(system: System, job_dir: str, local_root: Path) -> str:
    """`` Its worker log (PATH) ends with: LINE.`` for a died job, or ``""`` if there is no such line."""
    try:
        await system.transport.download(await system.remote_root(), [f"{job_dir}/{layout.WORKER_LOG}"], local_root)
    except TransportError:
        return ""
    path = local_root / job_dir / layout.WORKER_LOG
    try:
        line = last_error_line(path.read_text(errors="replace"))
    except OSError:
        return ""
    return f" Its worker log ({path}) ends with: {line}." if line else ""
