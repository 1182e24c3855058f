"""Files that are complete or absent: atomic writes, and results checked against their marker.

A job's worker writes its result to a temporary name, fsyncs it and renames it into place,
and only then writes the final marker (itself atomically), whose content is the result's
size and sha256. The driver checks the fetched result against the fetched marker before
unpickling it, so a result cut short anywhere on its way (a killed fetch, a full disk, a
file system that lied) is fetched again or reported, never used. Imports only the standard
library: the worker loads this module in every queued job.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from . import layout
from .job_files import JobFiles, job_files

__all__ = ["copy_atomic", "marker_content", "read_verified_result", "write_atomic"]


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name, fsync, rename: readers see all or nothing."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash of the node
    finally:
        os.close(directory)


def copy_atomic(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` (a file, or a directory's files) so that each file appears whole."""
    files = [source] if not source.is_dir() else sorted(p for p in source.rglob("*") if not p.is_dir())
    for file in files:
        destination = target if file == source else target / file.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp = destination.with_name(f".{destination.name}.wfl_async_tmp.{os.getpid()}")
        shutil.copy2(file, tmp)
        os.replace(tmp, destination)


def marker_content(result: bytes, seconds: float | None = None) -> bytes:
    """What a final marker holds: the size and sha256 of the result it vouches for, and the seconds
    the task's function took (measured by the worker after unpickling it, whose imports a packed
    worker pays once: the measured time that self-tuning keeps, finer than the markers' times)."""
    content: dict[str, object] = {"size": len(result), "sha256": hashlib.sha256(result).hexdigest()}
    if seconds is not None:
        content["seconds"] = round(seconds, 4)
    return json.dumps(content).encode() + b"\n"


def marker_seconds(job_dir: Path | JobFiles) -> float | None:
    """The run time a fetched job's final marker states; None: an older worker's marker, or none."""
    files = job_files(job_dir)
    for name in layout.FINAL_MARKERS:
        try:
            return float(json.loads(files.read(name) or b"")["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def read_verified_result(job_dir: Path | JobFiles) -> bytes:
    """The bytes of ``job_dir``'s result, checked against its final marker.

    A marker left empty by an older worker vouches only for the result's existence.

    :raises FileNotFoundError: there is no result file
    :raises ResultIntegrityError: no marker came with the result, or size or sha256 differ
    """
    from ..errors import ResultIntegrityError

    files = job_files(job_dir)
    where = files.where(layout.RESULT)
    data = files.read(layout.RESULT)
    if data is None:
        raise FileNotFoundError(where)
    marker, text = next(((name, text) for name in layout.FINAL_MARKERS if (text := files.read(name)) is not None),
                        (None, b""))
    if marker is None:
        raise ResultIntegrityError(f"{where} came without its final marker", where)
    if not text.strip():
        return data
    try:
        expected = json.loads(text)
        size, digest = int(expected["size"]), str(expected["sha256"])
    except (ValueError, KeyError, TypeError):
        raise ResultIntegrityError(f"final marker {files.where(marker)} is unreadable: {text[:200]!r}",
                                   where) from None
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise ResultIntegrityError(
            f"{where} is not the result its job wrote: {len(data)} bytes, sha256 "
            f"{hashlib.sha256(data).hexdigest()[:16]}..., expected {size} bytes, sha256 {digest[:16]}...",
            where)
    return data
