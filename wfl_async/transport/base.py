"""The transport interface: run a command, move many files in one stream.

Everything above this layer sees only :class:`Transport`; nothing above imports asyncssh.
A transport runs shell text (built and quoted by the caller) with optional stdin and
returns a :class:`subprocess.CompletedProcess` whatever carried it, so callers cannot
tell local from ssh. Files travel as one tar stream over one command, both ways.
"""

from __future__ import annotations

import io
import shlex
import tarfile
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess
from typing import Literal

import anyio

from ..errors import RemoteCommandError

__all__ = ["CommandKind", "CommandRecord", "LineCallback", "Transport", "TransportStats", "LineSplitter"]

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


class Transport(ABC):
    """Runs commands on one host. Safe to share between any number of coroutines."""

    def __init__(self) -> None:
        self.stats = TransportStats()

    @property
    @abstractmethod
    def where(self) -> str:
        """Host description for messages."""

    @abstractmethod
    async def _run(self, command: str, stdin: bytes | None, on_line: LineCallback | None) -> CompletedProcess[bytes]:
        """Run ``command`` in a POSIX shell; never raises for a non-zero exit status.

        Calls ``on_line`` with each complete stdout line as soon as it arrives.
        """

    async def run(self, command: str, *, stdin: bytes | None = None, check: bool = True,
                  on_line: LineCallback | None = None, kind: CommandKind = "other") -> CompletedProcess[bytes]:
        """Run shell text ``command`` with ``stdin``.

        :param command: shell text; the caller quotes every value in it
        :param stdin: bytes fed to the command's standard input
        :param check: raise :class:`RemoteCommandError` on a non-zero exit status
        :param on_line: called with each stdout line (decoded, without its newline) while the
            command still runs, e.g. to act on each submitted job at once; it may be called
            again for the same lines if a dropped connection makes the command run again
        :param kind: what the command is for, recorded in :attr:`stats`
        :return: the completed process, stdout and stderr as bytes
        :raises RemoteCommandError: the command failed and ``check`` is true
        :raises TransportError: the command could not be run at all
        """
        sent = len(stdin or b"")
        self.stats.commands_run += 1
        self.stats.bytes_sent += sent
        started = time.monotonic()
        result = await self._run(command, stdin, on_line)
        received = len(result.stdout) + len(result.stderr)
        self.stats.bytes_received += received
        self.stats.records.append(CommandRecord(kind, started, time.monotonic() - started,
                                                result.returncode, sent, received))
        if check and result.returncode != 0:
            raise RemoteCommandError(command, result.returncode, result.stdout, result.stderr, self.where)
        return result

    async def upload(self, local_root: Path, relpaths: Sequence[str], remote_root: str,
                     *, before: str = "", then: str = "", on_line: LineCallback | None = None,
                     kind: CommandKind = "stage") -> CompletedProcess[bytes]:
        """Copy ``local_root/relpath`` for each relpath to ``remote_root/relpath`` in one stream.

        :param before: shell text run first, in the same command
        :param then: shell text run after unpacking, in the same command (saves a round trip)
        :param kind: recorded in :attr:`stats` (``"submit"`` when ``then`` submits the staged jobs)
        """
        data = await anyio.to_thread.run_sync(_pack, local_root, relpaths)
        root = shlex.quote(remote_root)
        command = f"{before} && " if before else ""
        # --skip-old-files: a rerun taking over an interrupted submission must not rewrite the files
        # of a job that may already be running (their content is the same anyway)
        command += f"mkdir -p {root} && tar -C {root} --skip-old-files -xf -"
        if then:
            command += f" && {then}"
        return await self.run(command, stdin=data, on_line=on_line, kind=kind)

    async def download(self, remote_root: str, relpaths: Sequence[str], local_root: Path) -> None:
        """Copy ``remote_root/relpath`` to ``local_root/relpath`` in one stream; missing ones are skipped."""
        if not relpaths:
            return
        names = " ".join(shlex.quote(p) for p in relpaths)
        # GNU tar: --ignore-failed-read turns a missing file into a warning (exit 0), so one
        # absent output file does not lose every other job's result in the same stream.
        result = await self.run(
            f"cd {shlex.quote(remote_root)} && tar --ignore-failed-read -cf - -- {names} 2>/dev/null; true",
            kind="fetch")
        await anyio.to_thread.run_sync(_unpack, result.stdout, local_root)

    async def aclose(self) -> None:  # noqa: B027 - a no-op is right for transports without connections
        """Release connections; the transport may be used again afterwards (it reconnects)."""

    def __repr__(self) -> str:
        s = self.stats
        return (f"<{type(self).__name__} {self.where} [connections: {s.connections_opened} | "
                f"commands: {s.commands_run}]>")


def _pack(root: Path, relpaths: Sequence[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in relpaths:
            tar.add(root / rel, arcname=rel)
    return buffer.getvalue()


def _unpack(data: bytes, root: Path) -> None:
    if not data:
        return
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        # the "data" filter refuses absolute paths, '..' and device files from the remote side
        tar.extractall(root, filter="data")


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
