"""A finished job's fetched files, wherever they are kept: its own directory, or a fetched bundle.

The driver reads a job's result, final marker, started marker and worker log through
:class:`JobFiles`, so the readers (:mod:`.integrity`, :mod:`.run_record`) need not know whether
the files were written one by one under the job's local directory (:class:`DirFiles`) or came
in a batch kept as one file (:mod:`.fetched`). Standard library only: the worker loads
:mod:`.integrity`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

__all__ = ["DirFiles", "JobFiles", "job_files"]


class JobFiles(Protocol):
    """Read access to one job's fetched files, by their name in the job directory."""

    def read(self, name: str) -> bytes | None:
        """The file's bytes; None: it did not come back."""

    def mtime(self, name: str) -> float | None:
        """The file's modification time (as on the cluster); None: it did not come back."""

    def where(self, name: str) -> str:
        """Where the file is, for messages."""


class DirFiles:
    """The files of a job directory, one file each (jobs fetched one file each, or fetched again)."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None

    def mtime(self, name: str) -> float | None:
        try:
            return (self.path / name).stat().st_mtime
        except FileNotFoundError:
            return None

    def where(self, name: str) -> str:
        return str(self.path / name)


def job_files(files: Path | JobFiles) -> JobFiles:
    """``files`` as :class:`JobFiles` (a path is a job directory)."""
    return DirFiles(files) if isinstance(files, Path) else files
