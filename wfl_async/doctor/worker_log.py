"""What a died job's worker log says: its last error line, for the :class:`JobDiedError` message.

A job that left the queue without a final marker usually died before or inside the worker
(``ModuleNotFoundError`` for wfl_async, a task that does not unpickle, killed for memory);
its worker log holds the reason. Fetching it costs one command, paid only by died jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TransportError
from ..jobs import layout
from ..jobs.run_record import last_error_line

if TYPE_CHECKING:
    from ..system import System

__all__ = ["died_job_hint", "last_error_line"]

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
