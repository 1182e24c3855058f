"""A scripted transport for unit tests of the loops: no daemon, no shell, answers chosen by the test.

It sees what the real transports see from their callers (the command's declared ``kind``, its
stdin) and answers as the test's script says, so a test drives the submit loop, the poll loop
or the packing coordinator through batching, retries, lost answers and window room in
milliseconds. It backs *unit* tests only: every behaviour here is also tested against the real
daemons in tests/remote.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from subprocess import CompletedProcess

import anyio
import anyio.lowlevel

from wfl_async.config.system_config import SystemConfig
from wfl_async.errors import TransportError
from wfl_async.jobs.states import Verdict, VerdictKind
from wfl_async.scheduler.base import SUBMIT_RECORD_END
from wfl_async.system.commands import QUEUE_END, ROOT_OK
from wfl_async.system.requests import SubmitRequest, Watch
from wfl_async.transport.base import MANIFEST, CommandKind, LineCallback, Transport

ROOT = "/remote/run"
"""The remote root the scripted machine reports."""


@dataclass
class Sent:
    """One command the loop sent, as the transport saw it."""

    kind: CommandKind
    command: str
    stdin: bytes | None
    job_dirs: list[str] = field(default_factory=list)
    """The job directories it carries on stdin, in order (a staging tar stream's, or a list of names)."""


Answer = str | bytes | BaseException | tuple[str, BaseException]
"""Stdout to answer with (exit status 0); an exception to raise (e.g. a dropped connection); or
lines delivered before an exception (an answer cut short)."""
Script = Callable[[Sent], Answer]


class ScriptedTransport(Transport):
    """Answers each command by its ``kind`` with the test's script; records every command in :attr:`sent`."""

    def __init__(self, **scripts: Script) -> None:
        super().__init__()
        self.scripts = {"probe": lambda sent: f"{ROOT}\n", **scripts}
        self.sent: list[Sent] = []

    @property
    def where(self) -> str:
        return "scripted"

    async def _run(self, command: str, stdin: bytes | None, on_line: LineCallback | None, retry: bool,
                   kind: CommandKind) -> CompletedProcess[bytes]:
        sent = Sent(kind, command, stdin, carried_dirs(stdin))
        self.sent.append(sent)
        await anyio.lowlevel.checkpoint()
        answer = self.scripts[kind](sent)
        if isinstance(answer, BaseException):
            raise answer
        lines, error = answer if isinstance(answer, tuple) else (answer, None)
        stdout = lines if isinstance(lines, bytes) else lines.encode()
        if on_line is not None and isinstance(lines, str):
            for line in lines.splitlines():
                on_line(line)
        if error is not None:
            raise error
        return CompletedProcess(command, 0, stdout, b"")

    def kinds(self) -> list[str]:
        return [s.kind for s in self.sent]


def carried_dirs(stdin: bytes | None) -> list[str]:
    """Job directories a command carries on stdin: a staging tar stream's (in the batch's order), or a name list."""
    if not stdin:
        return []
    try:
        with tarfile.open(fileobj=io.BytesIO(stdin)) as tar:
            names = tar.getnames()
    except tarfile.ReadError:
        return stdin.decode().splitlines()
    dirs: list[str] = []
    for name in names:
        top = name.split("/", 1)[0]
        if name != MANIFEST and top not in dirs:
            dirs.append(top)
    return dirs


def tar_of(files: dict[str, bytes]) -> bytes:
    """A tar stream holding ``files`` (path -> content), as a fetch command prints."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def submitted(index: int, remote_id: str) -> str:
    """A submit record saying job ``index`` of the batch was queued as ``remote_id`` (Slurm's words)."""
    return f"{index}\t0\tSubmitted batch job {remote_id}\n{SUBMIT_RECORD_END}\n"


def refused(index: int, complaint: str, rc: int = 1) -> str:
    """A submit record saying job ``index`` of the batch was refused with ``complaint``."""
    return f"{index}\t{rc}\t{complaint}\n{SUBMIT_RECORD_END}\n"


def poll_answer(queue: dict[str, str] | None, markers: dict[str, str] | None = None, extension: str = "") -> str:
    """What a survey prints: Slurm's listing (id -> state; None: squeue failed), then the markers."""
    if queue is None:
        head = f"slurm_load_jobs error: Socket timed out\n{QUEUE_END} 1\n"
    else:
        head = "".join(f"{job_id}|{state}|None\n" for job_id, state in queue.items()) + f"{QUEUE_END} 0\n"
    lines = "".join(f"{marker} {job_dir}\n" for job_dir, marker in (markers or {}).items())
    return f"{head}{extension}{ROOT_OK}\n{lines}"


def dropped() -> TransportError:
    return TransportError("scripted: the connection dropped while the command ran")


def slurm_config(**values: object) -> SystemConfig:
    """A Slurm system as config.json would give it (no rate limit unless asked: tests run at full speed)."""
    fields: dict[str, object] = dict(name="hpc", host="login.hpc", scheduler="slurm", scheduler_rate=None,
                                     partitions={"standard": {"num_cores": 4, "max_time": 3600}},
                                     died_grace_seconds=0.0)
    fields.update(values)
    return SystemConfig(**fields)  # type: ignore[arg-type]


class ListRecorder:
    """A :class:`~wfl_async.system.recorder.Recorder` keeping what the loops report."""

    def __init__(self) -> None:
        self.submitted_ids: dict[str, str | None] = {}
        self.progress: list[tuple[str, Verdict]] = []

    def submitted(self, requests: Sequence[SubmitRequest], root: str) -> None:
        assert root == ROOT
        self.submitted_ids.update((request.job_dir, request.remote_id) for request in requests)

    async def progressed(self, changes: list[tuple[Watch, Verdict]]) -> None:  # type: ignore[override]
        self.progress.extend((watch.job_dir, verdict) for watch, verdict in changes)

    async def ended(self, job_dirs: Sequence[str]) -> set[str]:
        """Those reported died or finished so far."""
        ended = {job_dir for job_dir, verdict in self.progress if verdict.kind in (VerdictKind.FINISHED, VerdictKind.DIED)}
        return ended & set(job_dirs)
