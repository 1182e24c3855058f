"""Fetched bundles: the small files of a batch of finished jobs kept as ONE local file.

At 10^4-10^5 packed chunks, writing each chunk's result, markers and log as files of their own
was most of the driver's time (four to five files a chunk; on a loaded disk each costs
milliseconds), and the results reached the caller only as fast as those files were written. So
a fetched batch is written as it came: one tar file under the stage root's
:data:`BUNDLE_DIR`, through a temporary name and a rename (complete or absent), holding first
an index (job dir -> file name -> offset, size, mtime), then the fetched stream unchanged
(``tar xf`` on a bundle gives the files back). The batch's jobs get their files from memory at
once (:func:`save_bundle`); a later run finds them through the index (:class:`FetchedStore`).

A job's files in its own local directory (fetched again after an integrity mismatch, or by
``wfl-async sync``) win over a bundle; of two bundles holding the same job (fetched again after
a driver was killed before recording the first), the newer wins. Standard library only.

A bundle is its jobs' local copy, kept as a job's own directory is (a rerun with the results there
returns at once, without the cluster; once the remote directories are cleaned it is the only copy):
nothing removes it when its results reach the caller. ``wfl-async clean`` and ``rm`` remove a bundle
once none of its jobs keeps its local copy (:func:`unwanted_bundles`); a bundle is one file, so one
holding a job still kept stays whole.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

from . import layout
from .job_files import DirFiles, JobFiles

__all__ = ["BUNDLE_DIR", "BundledFiles", "FetchedStore", "bundles", "save_bundle", "unwanted_bundles"]

BUNDLE_DIR = "_wfl_async_fetched"
"""Under the stage root: one ``<time>-<token>.tar`` per fetched batch."""
_INDEX = "_wfl_async_index.json"
"""The bundle's first member: ``{job dir: {file name: [offset, size, mtime]}}``, offsets from the end of this member."""
_SUFFIX = ".tar"
_TMP = ".tmp."
_BLOCK = 512

_Entry = dict[str, list[float]]
"""File name -> ``[offset, size, mtime]`` of one job in a bundle (as its index holds it)."""
_Flat = tuple[Any, ...]
"""One job's entry flattened: ``name, offset, size, mtime, name, ...``. A rerun holds one per chunk of
every bundle: as the index's dict of lists it was about 1 KB a chunk (100 MiB at 10^5), half as this."""


def _flat(entry: _Entry) -> _Flat:
    return tuple(v for name, (offset, size, mtime) in entry.items() for v in (name, int(offset), int(size), mtime))


class BundledFiles:
    """One job's files in a bundle: in memory (just fetched) or read from the bundle file by offset."""

    __slots__ = ("_base", "_data", "_entry", "_path")

    def __init__(self, entry: _Flat, data: bytes | None, path: Path, base: int = 0) -> None:
        """``entry``'s offsets count from ``base`` in ``data`` (just fetched), else in the bundle file ``path``."""
        self._entry, self._data, self._path, self._base = entry, data, path, base

    def _find(self, name: str) -> int | None:
        """Where ``name``'s four values start in the entry (a job has a handful of files)."""
        entry = self._entry
        return next((i for i in range(0, len(entry), 4) if entry[i] == name), None)

    def read(self, name: str) -> bytes | None:
        at = self._find(name)
        if at is None:
            return None
        offset, size = self._base + self._entry[at + 1], self._entry[at + 2]
        if self._data is not None:
            return self._data[offset:offset + size]
        with open(self._path, "rb") as handle:
            return os.pread(handle.fileno(), size, offset)

    def mtime(self, name: str) -> float | None:
        at = self._find(name)
        return None if at is None else float(self._entry[at + 3])

    def where(self, name: str) -> str:
        return f"{name} in {self._path}"

    def names(self) -> frozenset[str]:
        return frozenset(self._entry[::4])


def _read_index(path: Path) -> tuple[int, dict[str, _Entry]]:
    """A bundle's index, and the offset where its fetched stream starts (after the index member)."""
    with open(path, "rb") as handle:
        info = tarfile.TarInfo.frombuf(os.pread(handle.fileno(), _BLOCK, 0), tarfile.ENCODING, "surrogateescape")
        if info.name != _INDEX:
            raise ValueError(f"{path} is not a fetched bundle (its first member is {info.name!r})")
        return _BLOCK + -(-info.size // _BLOCK) * _BLOCK, json.loads(os.pread(handle.fileno(), info.size, _BLOCK))


_Member = tuple[str, bool, int, int, float]
"""A stream's member: name, a plain regular file (not a link, directory, device or sparse file), where its
data starts, size, mtime."""


def _check(path: str, regular: bool) -> tuple[str, str]:
    """``(job dir, file name)`` of a fetched member; refuses anything but a regular file under a job dir."""
    job_dir, _, name = path.rpartition("/")
    if (not regular or path.startswith("/") or ".." in path.split("/") or not job_dir
            or name not in layout.FETCH_ON_FINISH):
        raise tarfile.FilterError(f"refusing {path!r} in a fetched bundle: only a finished job's own regular "
                                  f"files ({', '.join(layout.FETCH_ON_FINISH)}) may come back there")
    return job_dir, name


def _members(stream: bytes) -> list[_Member]:
    """Every member of the tar ``stream``: read from the headers at once when they are all plain (below),
    else by :mod:`tarfile`."""
    plain = _plain_members(stream)
    if plain is not None:
        return plain
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as tar:
        return [(m.name, m.isfile() and m.sparse is None, m.offset_data, m.size, m.mtime) for m in tar]


_REGULAR = (b"0", b"\0")
_POSIX_MAGIC = b"ustar\x0000"


def _plain_members(stream: bytes) -> list[_Member] | None:
    """The members of a stream whose every header is a regular file's with its whole name in the name field
    and octal numbers, as GNU tar writes a job's small files; None for anything else (a long name's extra
    member, a name prefix, a link, a pax header, a bad checksum, a cut stream: :mod:`tarfile` reads those).

    :mod:`tarfile` reads a header in about 25 us, four per packed chunk: at 10^5 chunks that was seconds of the
    driver's time for headers this reads in a few (issue 16).
    """
    members: list[_Member] = []
    at = 0
    while at + _BLOCK <= len(stream):
        header = stream[at:at + _BLOCK]
        if not header.strip(b"\0"):
            return members  # the end-of-archive blocks
        try:
            size, mtime, checksum = (int(header[a:b].strip(b"\0 ") or b"0", 8)
                                     for a, b in ((124, 136), (136, 148), (148, 156)))
        except ValueError:
            return None  # base-256 numbers
        if (header[156:157] not in _REGULAR or checksum != 256 + sum(header[:148]) + sum(header[156:])
                or (header[257:265] == _POSIX_MAGIC and header[345] != 0)):
            return None
        members.append((header[:100].rstrip(b"\0").decode(tarfile.ENCODING, "surrogateescape"), True, at + _BLOCK,
                        size, mtime))
        at += _BLOCK + -(-size // _BLOCK) * _BLOCK
    return None  # no end-of-archive blocks: cut short, or not a whole number of blocks


def save_bundle(local_root: Path, stream: bytes) -> dict[str, BundledFiles]:
    """Keep the fetched tar ``stream`` as one bundle under ``local_root``; each job dir's files, from memory.

    Every member is checked before anything is written (only the files of
    :data:`~.layout.FETCH_ON_FINISH` under a job directory). The bundle appears complete or not at all.
    """
    if not stream:
        return {}
    index: dict[str, _Entry] = {}
    for member, regular, offset, size, mtime in _members(stream):
        job_dir, name = _check(member, regular)
        index.setdefault(job_dir, {})[name] = [offset, size, mtime]
    if not index:
        return {}
    text = json.dumps(index, separators=(",", ":")).encode()
    info = tarfile.TarInfo(_INDEX)
    info.size, info.mode, info.mtime = len(text), 0o600, int(time.time())
    head = info.tobuf(format=tarfile.USTAR_FORMAT) + text + b"\0" * (-len(text) % _BLOCK)
    directory = local_root / BUNDLE_DIR
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
    path, tmp = directory / name, directory / f"{_TMP}{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            for part in (head, stream):
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {job_dir: BundledFiles(_flat(entry), stream, path) for job_dir, entry in index.items()}


def bundles(local_root: Path) -> dict[Path, frozenset[str]]:
    """Every complete bundle under ``local_root`` and the job dirs its index holds (an unreadable one: none)."""
    directory = local_root / BUNDLE_DIR
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(_SUFFIX) and not n.startswith(_TMP))
    except FileNotFoundError:
        return {}
    held: dict[Path, frozenset[str]] = {}
    for name in names:
        try:
            held[directory / name] = frozenset(_read_index(directory / name)[1])
        except (OSError, ValueError, tarfile.TarError):
            held[directory / name] = frozenset()
    return held


def unwanted_bundles(held: dict[Path, frozenset[str]], removed: set[str], kept: set[str]) -> list[Path]:
    """The bundles of ``held`` to delete as the local copies of the jobs ``removed`` go: those holding one
    of them and no job of ``kept`` (jobs whose local copy stays)."""
    return [path for path, job_dirs in held.items() if job_dirs & removed and not job_dirs & kept]


_PACKED_FILE = struct.Struct("<BQQd")
"""One file of a job's entry as a :class:`FetchedStore` keeps it: its name (its place in
:data:`~.layout.FETCH_ON_FINISH`), offset, size, mtime."""
_PACKED_HEAD = struct.Struct("<I")
"""Before a kept entry's files: the number of the bundle holding them (:attr:`FetchedStore._bundles`)."""


def _packed(bundle: int, entry: _Entry) -> bytes | None:
    """``entry`` of bundle number ``bundle`` as one bytes object; None: it names a file no bundle may hold."""
    try:
        return _PACKED_HEAD.pack(bundle) + b"".join(
            _PACKED_FILE.pack(layout.FETCH_ON_FINISH.index(name), int(offset), int(size), float(mtime))
            for name, (offset, size, mtime) in entry.items())
    except (ValueError, TypeError, struct.error):
        return None


def _unpacked(packed: bytes) -> tuple[int, _Flat]:
    """The bundle number and the flat entry of :func:`_packed`'s bytes."""
    flat = tuple(v for name, offset, size, mtime in _PACKED_FILE.iter_unpack(packed[_PACKED_HEAD.size:])
                 for v in (layout.FETCH_ON_FINISH[name], offset, size, mtime))
    return _PACKED_HEAD.unpack_from(packed)[0], flat


class FetchedStore:
    """Finds a finished job's fetched files under one stage root: its own directory, else the newest bundle.

    The bundles' indexes are read when a job is first looked for that no bundle read so far holds
    (a rerun), and again only when the bundle directory has changed: a rerun of 10^5 chunks reads a
    few hundred small indexes, not a file per chunk. Each job found is kept as one bytes object of
    about 100 bytes (:func:`_packed`): as the index's lists, or a tuple of them, it was 0.7 KB a job,
    70 MiB of a rerun's memory at 10^5 chunks (issue 16).
    """

    def __init__(self, local_root: Path) -> None:
        self.local_root = local_root
        self._root = str(local_root)
        self._bundle_dir = os.path.join(self._root, BUNDLE_DIR)
        """(strings: a rerun looks up every chunk, and a ``Path`` made per lookup cost more than its stat)"""
        self._bundles: list[tuple[Path, int]] = []
        """Each bundle read: its path and where its fetched stream starts (after its index)."""
        self._where: dict[str, bytes] = {}
        """Job dir -> its entry in the newest bundle holding it (:func:`_packed`)."""
        self._read: set[str] = set()
        self._dir_mtime: int | None = None

    def files(self, job_dir: str) -> JobFiles | None:
        """The job's fetched files; None: neither its own directory nor any bundle has its result."""
        if os.path.exists(os.path.join(self._root, job_dir, layout.RESULT)):
            return DirFiles(self.local_root / job_dir)
        self._scan()
        found = self._where.get(job_dir)
        if found is None:
            return None
        bundle, entry = _unpacked(found)
        path, start = self._bundles[bundle]
        return BundledFiles(entry, None, path, start)

    def _scan(self) -> None:
        try:
            mtime = os.stat(self._bundle_dir).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._dir_mtime:
            return
        self._dir_mtime = mtime
        directory = Path(self._bundle_dir)
        for name in sorted(n for n in os.listdir(directory) if n.endswith(_SUFFIX) and not n.startswith(_TMP)):
            if name in self._read:
                continue
            self._read.add(name)  # in name order: a newer bundle's entry replaces an older one's
            path = directory / name
            try:
                start, index = _read_index(path)
            except (OSError, ValueError, tarfile.TarError):
                continue  # unreadable: its jobs are fetched again
            bundle = len(self._bundles)
            self._bundles.append((path, start))
            for job_dir, entry in index.items():
                packed = _packed(bundle, entry)
                if packed is not None:
                    self._where[job_dir] = packed
                else:  # a file no bundle may hold (not this version's): fetched again, not an older copy used
                    self._where.pop(job_dir, None)
