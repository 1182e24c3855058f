"""What a died job's worker log says: its last error line, for the :class:`JobDiedError` message.

A job that left the queue without a final marker usually died before or inside the worker
(``ModuleNotFoundError`` for wfl_async, a task that does not unpickle, killed for memory);
its worker log holds the reason. Fetching it costs one command, paid only by died jobs.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TransportError
from ..failures import permanent_cause
from ..jobs import layout
from ..jobs.run_record import last_error_line

if TYPE_CHECKING:
    from ..system import System

__all__ = ["died_job_hint", "last_error_line"]

async def died_job_hint(system: System, job_dir: str, local_root: Path) -> str:
    """`` Its worker log (PATH) ends with: LINE.`` for a died job, and what its disk says when that is
    full (a job that fills its disk cannot even write why it died); ``""`` if there is nothing to say."""
    root = await system.remote_root()
    full = await _full_disk(system, f"{root}/{job_dir}")
    try:
        await system.transport.download(root, [f"{job_dir}/{layout.WORKER_LOG}"], local_root)
    except TransportError:
        return full
    path = local_root / job_dir / layout.WORKER_LOG
    try:
        line = last_error_line(path.read_text(errors="replace"))
    except OSError:
        return full
    return (f" Its worker log ({path}) ends with: {line}." if line else "") + full


async def _full_disk(system: System, directory: str) -> str:
    """`` The filesystem of DIR (MOUNT) is full: ...`` when it has no block or no inode left, else ``""``."""
    quoted = shlex.quote(directory)
    try:
        result = await system.transport.run(f"df -Pk {quoted} && df -Pi {quoted}", check=False, kind="other")
    except TransportError:
        return ""
    rows = [line.split() for line in result.stdout.decode(errors="replace").splitlines()
            if line.strip() and not line.startswith("Filesystem")]
    if len(rows) != 2 or any(len(row) < 6 for row in rows):
        return ""
    (_, blocks, _, free_kb, _, mount), (_, inodes, _, free_inodes, _, _) = rows[0][:6], rows[1][:6]
    if free_kb != "0" and not (inodes != "0" and free_inodes == "0"):
        return ""
    what = f"{free_kb} KB free of {blocks} KB" if free_kb == "0" else f"no inode free of {inodes}"
    cause = permanent_cause("No space left on device")
    assert cause is not None
    return (f" The filesystem of its directory ({mount}) is full ({what}): no space left on device, which "
            f"is most likely what killed it. Fix: {cause.fix_for(mount)}.")
