"""Private by default: what wfl_async creates on this machine is readable by its owner only.

Staged task pickles, fetched results and the jobs database hold a user's inputs and
results; on a shared machine other users must not read them. Remote commands get the
same through ``umask 077`` (:data:`wfl_async.transport.base.PRIVATE_UMASK`). The process
umask is left alone: it belongs to the user's program, not to this library.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_dir", "private_file"]


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make it mode 0700; everything below is then unreachable to others."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` if missing and make it mode 0600 (SQLite gives its -wal/-shm files the same mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    path.chmod(0o600)
    return path
