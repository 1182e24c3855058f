"""The transport interface: run a command, move many files in one stream.

Everything above this layer sees only :class:`Transport`; nothing above imports asyncssh.
A transport runs shell text (built and quoted by the caller) with optional stdin and
returns a :class:`subprocess.CompletedProcess` whatever carried it, so callers cannot
tell local from ssh. Files travel as one tar stream over one command, both ways.

Two rules hold for every command and every file, whatever carries it:

* **Private by default.** Every command runs under ``umask 077``, so the directories and
  files it creates (job directories, staged inputs, results) are readable by their owner
  only; locally fetched files land under a directory of mode 0700.
* **Nothing half-written is ever used.** An upload unpacks into a temporary directory,
  checks every file against a sha256 manifest that travels last in the same stream, and
  only then links the files into place (never replacing one that exists); a download
  writes each file under a temporary name beside its own and renames it into place. A stream cut
  short leaves nothing behind under the real names, so a rerun sends it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shlex
import shutil
import tarfile
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess
from typing import Literal

import anyio

from ..errors import RemoteCommandError

__all__ = ["CommandKind", "CommandRecord", "FETCH_PATHS", "LineCallback", "MAX_COMMAND_BYTES", "Transport",
           "TransportStats", "LineSplitter", "PRIVATE_UMASK", "pack", "upload_command"]

PRIVATE_UMASK = 0o077
"""Every command runs under this umask: what wfl_async creates is its owner's only."""
MANIFEST = ".wfl_async_manifest"
"""Last member of every upload stream: ``sha256  name`` per file, as ``sha256sum -c`` reads it."""
_UPLOAD_TMP = ".wfl_async_upload."
_FETCH_TMP = ".wfl_async_fetch."
MAX_COMMAND_BYTES = 64 * 1024
"""Longest shell text any command may be. Linux caps one argument (``sh -c TEXT``, and what sshd
hands the login shell) at 128 KiB (MAX_ARG_STRLEN); lists of job directories therefore travel on
stdin, never on the command line, and a command longer than this is a bug, refused before it is sent."""
FETCH_PATHS = 2000
"""Files per fetch command: bounds the tar stream held in memory and the time one command takes."""
_FRESH_TOKEN = ".wfl_async_fresh"
"""Left in a directory an upload emptied first, so the same command run again does not empty it twice."""

LineCallback = Callable[[str], None]

#: What a command is for, declared by its caller (so nothing has to guess it from the command text).
CommandKind = Literal["submit", "poll", "fetch", "stage", "cancel", "probe", "other"]


@dataclass(frozen=True)
class CommandRecord:
    """One command this transport ran: what for, when, how long, and what it moved."""

    kind: CommandKind
    started: float          #: ``time.monotonic()`` when it was sent
    duration: float         #: seconds until its exit status came back (retries included)
    returncode: int
    bytes_sent: int
    bytes_received: int
    command_bytes: int = 0  #: length of the shell text (stdin not included)


@dataclass
class TransportStats:
    """What this transport has cost, for ``wfl-async bench``, the benchmarks and ``repr``.

    ``records`` holds one :class:`CommandRecord` per command, in the order they finished.
    """

    connections_opened: int = 0
    commands_run: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    records: list[CommandRecord] = field(default_factory=list)

    def by_kind(self) -> Counter[str]:
        """Number of commands run per :data:`CommandKind`."""
        return Counter(r.kind for r in self.records)

    def longest_command(self) -> int:
        """Bytes of the longest shell text sent so far (0 before the first command)."""
        return max((r.command_bytes for r in self.records), default=0)


class Transport(ABC):
    """Runs commands on one host. Safe to share between any number of coroutines."""

    def __init__(self) -> None:
        self.stats = TransportStats()
        self._file_threads: anyio.CapacityLimiter | None = None

    def file_threads(self) -> anyio.CapacityLimiter:
        """Threads of this transport's own for the local file work of its commands (packing a
        stream, unpacking a fetch, writing job scripts).

        Not anyio's default pool: while thousands of jobs stage their files or read their
        results there, a command queued behind them would wait for all of them (at N=2000 the
        first submit command waited seconds for every job's staging), and so would the first result.
        """
        if self._file_threads is None:
            self._file_threads = anyio.CapacityLimiter(16)
        return self._file_threads

    @property
    @abstractmethod
    def where(self) -> str:
        """Host description for messages."""

    @abstractmethod
    async def _run(self, command: str, stdin: bytes | None, on_line: LineCallback | None,
                   retry: bool, kind: CommandKind) -> CompletedProcess[bytes]:
        """Run ``command`` in a POSIX shell; never raises for a non-zero exit status.

        Calls ``on_line`` with each complete stdout line as soon as it arrives. ``retry``:
        the command may be run again if the connection drops while it runs. ``kind`` is what
        the caller declared the command is for, so a scripted transport (unit tests) answers
        by purpose instead of reading the shell text.
        """

    async def run(self, command: str, *, stdin: bytes | None = None, check: bool = True,
                  on_line: LineCallback | None = None, kind: CommandKind = "other",
                  retry: bool = False) -> CompletedProcess[bytes]:
        """Run shell text ``command`` with ``stdin``, under ``umask 077``.

        :param command: shell text; the caller quotes every value in it
        :param stdin: bytes fed to the command's standard input
        :param check: raise :class:`RemoteCommandError` on a non-zero exit status
        :param on_line: called with each stdout line (decoded, without its newline) while the
            command still runs, e.g. to act on each submitted job at once; with ``retry`` it
            may be called again for the same lines if the command runs again
        :param kind: what the command is for, recorded in :attr:`stats`
        :param retry: the caller declares the command safe to repeat: if the connection
            drops while it runs, it is run again after reconnecting. The default is False
            because only the caller knows; a command that never started (no connection yet)
            is always sent again
        :return: the completed process, stdout and stderr as bytes
        :raises RemoteCommandError: the command failed and ``check`` is true
        :raises TransportError: the command could not be run at all, or (without ``retry``)
            the connection dropped while it ran
        :raises ValueError: ``command`` is longer than :data:`MAX_COMMAND_BYTES` (a list that
            should have gone on stdin)
        """
        text = f"umask {PRIVATE_UMASK:03o}; {command}"
        size = len(text.encode())
        if size > MAX_COMMAND_BYTES:
            raise ValueError(f"refusing to send a {kind} command of {size} bytes to {self.where} (at most "
                             f"{MAX_COMMAND_BYTES}): lists must go on stdin; this is a bug in wfl_async")
        sent = len(stdin or b"")
        self.stats.commands_run += 1
        self.stats.bytes_sent += sent
        started = time.monotonic()
        result = await self._run(text, stdin, on_line, retry, kind)
        result.args = command
        received = len(result.stdout) + len(result.stderr)
        self.stats.bytes_received += received
        self.stats.records.append(CommandRecord(kind, started, time.monotonic() - started,
                                                result.returncode, sent, received, size))
        if check and result.returncode != 0:
            raise RemoteCommandError(command, result.returncode, result.stdout, result.stderr, self.where)
        return result

    async def upload(self, local_root: Path, relpaths: Sequence[str], remote_root: str,
                     *, before: str = "", then: str = "", fresh: Sequence[str] = (),
                     on_line: LineCallback | None = None, kind: CommandKind = "stage",
                     retry: bool = True, contents: Mapping[str, bytes] | None = None) -> CompletedProcess[bytes]:
        """Copy ``local_root/relpath`` for each relpath to ``remote_root/relpath`` in one stream.

        Files are checked against the stream's manifest before they appear under their
        names; a file that already exists there is kept (a rerun taking over an interrupted
        submission must not rewrite the files of a job that may already be running, and an
        existing file is always complete).

        :param before: shell text run first, in the same command
        :param then: shell text run after the files are in place, in the same command (saves a round trip)
        :param fresh: directories (relative to ``remote_root``) emptied before the files land;
            emptied once per call, even if the command runs again after a dropped connection
        :param kind: recorded in :attr:`stats` (``"submit"`` when ``then`` submits the staged jobs)
        :param retry: run the command again after a dropped connection (safe when ``then`` is)
        :param contents: more files to copy, given by their bytes (relpath -> bytes), not read from ``local_root``
        """
        data = await anyio.to_thread.run_sync(pack, local_root, relpaths, contents, limiter=self.file_threads())
        command = upload_command(remote_root, before=before, then=then, fresh=fresh)
        return await self.run(command, stdin=data, on_line=on_line, kind=kind, retry=retry)

    async def download(self, remote_root: str, relpaths: Sequence[str], local_root: Path) -> set[str]:
        """Copy ``remote_root/relpath`` to ``local_root/relpath``; missing ones are skipped.

        The names go on stdin (any number of them), at most :data:`FETCH_PATHS` per command.
        Each file appears under its name complete or not at all (temporary name, then rename).

        :return: the files that came (relative to ``local_root``), so the caller need not look for them
        """
        came: set[str] = set()
        for start in range(0, len(relpaths), FETCH_PATHS):
            came.update(await self._download_some(remote_root, relpaths[start:start + FETCH_PATHS], local_root))
        return came

    async def _download_some(self, remote_root: str, relpaths: Sequence[str], local_root: Path) -> list[str]:
        if not relpaths:
            return []
        stream = await self._fetch_stream(remote_root, relpaths)
        return await anyio.to_thread.run_sync(_unpack, stream, local_root, limiter=self.file_threads())

    async def fetch_streams(self, remote_root: str, relpaths: Sequence[str]) -> list[bytes]:
        """The files ``remote_root/relpath`` as tar streams, written nowhere (missing ones are skipped).

        As :meth:`download`: names on stdin, at most :data:`FETCH_PATHS` per command (one stream each).
        The caller checks the members' names before it uses them.
        """
        return [await self._fetch_stream(remote_root, relpaths[start:start + FETCH_PATHS])
                for start in range(0, len(relpaths), FETCH_PATHS)]

    async def _fetch_stream(self, remote_root: str, relpaths: Sequence[str]) -> bytes:
        # GNU tar: names NUL-separated on stdin, taken verbatim (a name starting with '-' is a
        # name); --ignore-failed-read turns a missing file into a warning (exit 0), so one
        # absent output file does not lose every other job's result in the same stream.
        # Reading files is safe to repeat after a dropped connection.
        names = b"".join(p.encode() + b"\0" for p in relpaths)
        result = await self.run(
            f"cd {shlex.quote(remote_root)} && tar --ignore-failed-read --null --verbatim-files-from -T - "
            f"-cf - 2>/dev/null; true", stdin=names, kind="fetch", retry=True)
        return result.stdout

    async def aclose(self) -> None:  # noqa: B027 - a no-op is right for transports without connections
        """Release connections; the transport may be used again afterwards (it reconnects)."""

    def __repr__(self) -> str:
        s = self.stats
        return (f"<{type(self).__name__} {self.where} [connections: {s.connections_opened} | "
                f"commands: {s.commands_run}]>")


def upload_command(remote_root: str, *, before: str = "", then: str = "", fresh: Sequence[str] = ()) -> str:
    """Shell text unpacking a :func:`pack` stream from stdin under ``remote_root``, verified, never half-written."""
    root = shlex.quote(remote_root)
    token = uuid.uuid4().hex
    command = f"{before} && " if before else ""
    command += f"mkdir -p {root} && wfl_async_root={root} && "
    if fresh:
        # emptied once: a second run of this same command (after a dropped connection) finds
        # its token and keeps what the first run put there
        dirs = " ".join(shlex.quote(d) for d in fresh)
        mark = f'"$wfl_async_root/$d/{_FRESH_TOKEN}"'
        command += (f'for d in {dirs}; do if [ "$(cat {mark} 2>/dev/null)" != {token} ]; then '
                    f'rm -rf -- "$wfl_async_root/$d" && mkdir -p -- "$wfl_async_root/$d" && '
                    f"echo {token} > {mark} || exit 1; fi; done && ")
    tmp = f'"$wfl_async_root/{_UPLOAD_TMP}{token}.$$"'
    # a failure (a full disk, a stream cut short) removes the temporary directory at once and keeps its
    # exit status, so nothing half-made is left behind and the caller reads the cause from stderr
    command += (f'wfl_async_tmp={tmp} && mkdir -- "$wfl_async_tmp" && {{ {{ tar -C "$wfl_async_tmp" --no-same-permissions -xf - && '
                f'( cd "$wfl_async_tmp" && sha256sum --quiet --strict -c {MANIFEST} && rm -f {MANIFEST} ) && '
                # hard links appear atomically, complete and verified; -n keeps files already there
                'cp -al -n -- "$wfl_async_tmp/." "$wfl_async_root/"; } || { wfl_async_rc=$?; '
                'rm -rf -- "$wfl_async_tmp"; (exit $wfl_async_rc); }; } && rm -rf -- "$wfl_async_tmp" && '
                # streams cut short by an earlier run left their temporary directory behind
                f'{{ find "$wfl_async_root" -maxdepth 1 -name \'{_UPLOAD_TMP}*\' -mmin +60 '
                '-exec rm -rf -- {} + 2>/dev/null; true; }')
    if then:
        command += f" && {then}"
    return command


def pack(root: Path, relpaths: Sequence[str], contents: Mapping[str, bytes] | None = None) -> bytes:
    """A tar stream of ``root/relpath`` for each relpath and of each of ``contents`` (relpath -> its bytes,
    written nowhere locally), ending with the sha256 manifest of its files."""
    now = int(time.time())
    if not relpaths:  # jobs staged from memory: their headers written here (:func:`_plain_stream`)
        plain = _plain_stream(contents or {}, now)
        if plain is not None:
            return plain
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in relpaths:
            tar.add(root / rel, arcname=rel)
        lines = []
        for member in tar.getmembers():
            if member.isfile():
                with open(root / member.name, "rb") as handle:
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
                lines.append(_manifest_line(digest, member.name))
        for rel, data in (contents or {}).items():
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), 0o600, now
            tar.addfile(info, io.BytesIO(data))
            lines.append(_manifest_line(hashlib.sha256(data).hexdigest(), rel))
        manifest = "".join(lines).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(manifest), 0o600, now
        tar.addfile(info, io.BytesIO(manifest))
    return buffer.getvalue()


def _plain_stream(contents: Mapping[str, bytes], mtime: int) -> bytes | None:
    """The tar stream :func:`pack` makes of in-memory ``contents`` and their manifest, each header a plain
    ustar one written here; None if a name does not fit one (not ASCII, or over 100 bytes: :mod:`tarfile`
    writes those).

    :mod:`tarfile` took about 22 us a member, two a job: at 10^3 one-job chunks 0.05 ms of the driver's
    CPU per job, most of the submit command's local work, for headers written here in a few (issue 16).
    """
    parts: list[bytes] = []
    lines = []
    for rel, data in contents.items():
        if not _plain_member(parts, rel, data, mtime):
            return None
        lines.append(_manifest_line(hashlib.sha256(data).hexdigest(), rel))
    if not _plain_member(parts, MANIFEST, "".join(lines).encode(), mtime):
        return None
    parts.append(bytes(2 * tarfile.BLOCKSIZE))  # the end-of-archive blocks
    stream = b"".join(parts)
    return stream + bytes(-len(stream) % tarfile.RECORDSIZE)  # whole records, as tarfile writes


def _plain_member(parts: list[bytes], name: str, data: bytes, mtime: int) -> bool:
    """Append a regular file's ustar header (mode 0600, owner 0), ``data`` and its padding to ``parts``;
    False (nothing appended) if ``name`` does not fit the header's name field."""
    if len(name) > 100 or not name.isascii() or len(data) >= 8 ** 11:
        return False
    encoded = name.encode("ascii")
    numbers = b"%011o\0%011o\0" % (len(data), mtime)  # size, mtime
    checksum = _USTAR_FIXED_SUM + sum(encoded) + sum(numbers)  # the header's bytes, its checksum field as spaces
    parts += (encoded.ljust(100, b"\0") + _USTAR_MODE_OWNER + numbers + b"%06o\0 " % checksum + _USTAR_TAIL,
              data, bytes(-len(data) % tarfile.BLOCKSIZE))
    return True


_USTAR_MODE_OWNER = b"0000600\0" + b"0000000\0" * 2
"""A plain member's mode, uid and gid fields."""
_USTAR_TAIL = tarfile.REGTYPE + bytes(100) + tarfile.POSIX_MAGIC + bytes(247)
"""A plain member's header after its checksum: type, no link name, ustar magic, nothing else."""
_USTAR_FIXED_SUM = sum(_USTAR_MODE_OWNER) + 8 * ord(" ") + sum(_USTAR_TAIL)


def _manifest_line(digest: str, name: str) -> str:
    """One line of ``sha256sum`` output (GNU coreutils escapes backslash, newline and CR in names)."""
    escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    prefix = "\\" if escaped != name else ""
    return f"{prefix}{digest}  {escaped}\n"


def _unpack(data: bytes, root: Path) -> list[str]:
    """Put each file of the tar stream ``data`` under ``root``, each complete or not at all; return their names.

    Every name is checked before anything is written: a stream naming an absolute path, ``..``
    or a device is refused whole. A regular file is written from the stream's bytes to a
    temporary name beside its target, given its mode (owner bits only) and time, then renamed
    into place: a few system calls per file, where ``extractall`` with the ``data`` filter
    resolved every path and was most of a fetch's cost at 10^5 small results. Anything else
    (a symbolic or hard link) is extracted with tarfile's ``data`` filter, as before.
    """
    if not data:
        return []
    root.mkdir(parents=True, exist_ok=True)
    view = memoryview(data)
    token = uuid.uuid4().hex
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member)
        made: set[str] = set()
        for member in members:
            if member.isdir():
                continue
            target = os.path.join(root, member.name)
            parent = os.path.dirname(target)
            if parent not in made:
                os.makedirs(parent, mode=0o700, exist_ok=True)
                made.add(parent)
            if member.isfile() and member.sparse is None:
                _write_then_rename(view[member.offset_data:member.offset_data + member.size], target,
                                   f"{parent}/{_FETCH_TMP}{token}", member.mode & 0o700, member.mtime)
            else:
                _extract_filtered(tar, member, root, token)
    return [member.name for member in members if not member.isdir()]


def _check_member(member: tarfile.TarInfo) -> None:
    """Refuse a name that could land outside the root, or a device: a remote side must never write elsewhere."""
    parts = member.name.split("/")
    if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir() or member.issym()
                                                            or member.islnk()):
        raise tarfile.FilterError(f"refusing to unpack {member.name!r} ({member.type!r}) from a fetched stream: "
                                  "only files and directories under the fetch's root may come back")


def _write_then_rename(content: memoryview, target: str, tmp: str, mode: int, mtime: float) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            while content:
                content = content[os.write(fd, content):]
            if mode != 0o600:
                os.fchmod(fd, mode or 0o600)
            os.utime(fd, (mtime, mtime))  # the markers' times are when the job ran (run_record)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _extract_filtered(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, token: str) -> None:
    """A link: extracted with tarfile's ``data`` filter into a temporary directory, then renamed into place."""
    tmp = root / f"{_FETCH_TMP}{token}"
    try:
        tar.extract(member, tmp, filter="data")
        os.replace(tmp / member.name, root / member.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class LineSplitter:
    """Feeds complete lines of a byte stream, as chunks arrive, to a :data:`LineCallback`."""

    def __init__(self, on_line: LineCallback | None) -> None:
        self.on_line = on_line
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        if self.on_line is None:
            return
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self.on_line(line.decode(errors="replace"))

    def close(self) -> None:
        if self.on_line is not None and self._partial:
            self.on_line(self._partial.decode(errors="replace"))
        self._partial = b""
