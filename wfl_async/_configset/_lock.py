"""One writer per output file, across processes: an OS lock (``fcntl.flock``) held while writing.

Two runs of the same script on the same output file must not interleave their frames in
the staging file or rename over each other's final file. Each output file gets a lock file
``.<name>.wfl_async_lock`` next to it, locked with ``flock`` (released by the kernel when the
holder exits, however it dies, so no stale lock ever needs removing by hand) and holding
the holder's pid and host, so the other process can say whom it is waiting for. The lock
file is left in place: removing it would let a third process lock a different inode.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

__all__ = ["OutputLock", "lock_path"]

LOCK_SUFFIX = ".wfl_async_lock"


def lock_path(final: Path) -> Path:
    return final.parent / f".{final.name}{LOCK_SUFFIX}"


class OutputLock:
    """Exclusive locks on a set of output files, taken all or none (in sorted order: no deadlock)."""

    def __init__(self, finals: list[Path]) -> None:
        self.paths = sorted({lock_path(Path(os.path.abspath(f))) for f in finals})
        self._fds: list[int] = []

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def try_acquire(self) -> str | None:
        """Take every lock without waiting; None when held, else who holds one (``pid N on host``)."""
        if self.held:
            return None
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                if holder.startswith(f"pid {os.getpid()} "):
                    holder = f"this process (another OutputSpec of the same file, not closed) {holder}"
                os.close(fd)
                self.release()
                return f"{holder} (lock {path})"
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            self._fds.append(fd)
        return None

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing the descriptor releases its flock
        self._fds = []

    def __del__(self) -> None:  # an OutputSpec abandoned without close() lets go of its files
        self.release()
