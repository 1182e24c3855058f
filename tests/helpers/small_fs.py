"""A small filesystem of the test's own: a size- or inode-limited tmpfs, filled on demand.

Root mounts it (``mount -t tmpfs -o size=...,nr_inodes=...``), owned by the user whose jobs will
write there (the sshd's test user for the ``*_ssh`` systems), so a test can fill a system's run
directory, or the local stage directory, the way a real disk or quota fills.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["fill_blocks", "fill_inodes", "small_filesystem"]


@contextlib.contextmanager
def small_filesystem(*, size: str = "1m", nr_inodes: int | None = None, owner: str = "root") -> Iterator[Path]:
    """A fresh tmpfs of ``size`` (and ``nr_inodes``) owned by ``owner``, unmounted afterwards."""
    path = Path(tempfile.mkdtemp(prefix="wfl_async_small_", dir="/tmp"))
    user = pwd.getpwnam(owner)
    options = f"size={size},mode=0755,uid={user.pw_uid},gid={user.pw_gid}"
    if nr_inodes is not None:
        options += f",nr_inodes={nr_inodes}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        with contextlib.suppress(OSError):
            path.rmdir()


def fill_blocks(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to its last byte with one file; returns it (remove it to free the space)."""
    filler = directory / "filler.bin"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as handle:
        while True:
            handle.write(b"\0" * 4096)
    return filler


def fill_inodes(directory: Path) -> Path:
    """Use every inode of the filesystem of ``directory`` with empty files, in a directory returned (remove it to free them)."""
    holder = directory / "inodes"
    with contextlib.suppress(OSError):
        holder.mkdir()
        for number in range(10**7):
            os.close(os.open(holder / str(number), os.O_CREAT | os.O_WRONLY, 0o600))
    return holder
