"""Run commands on this machine, through ``/bin/sh -c`` in a subprocess."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from subprocess import CompletedProcess

import anyio
import anyio.abc

from .base import CommandKind, LineCallback, LineSplitter, Transport

__all__ = ["LocalTransport", "run_process"]


class LocalTransport(Transport):
    """The transport of systems with ``"host": null``."""

    @property
    def where(self) -> str:
        return "this machine"

    async def _run(self, command: str, stdin: bytes | None, on_line: LineCallback | None,
                   retry: bool, kind: CommandKind) -> CompletedProcess[bytes]:
        del retry, kind  # nothing between us and the command can drop; nothing answers by purpose
        return await run_process(["/bin/sh", "-c", command], stdin, on_line)


async def run_process(argv: Sequence[str], stdin: bytes | None,
                      on_line: LineCallback | None) -> CompletedProcess[bytes]:
    """Run ``argv`` here with ``stdin``, handing each stdout line to ``on_line`` as it arrives.

    Shared by the local transport (``/bin/sh -c``) and the OpenSSH one (``ssh ... host command``).
    """
    output: dict[str, bytes] = {}
    lines = LineSplitter(on_line)

    async def drain(name: str, stream: anyio.abc.ByteReceiveStream | None) -> None:
        assert stream is not None
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            if name == "stdout":
                lines.feed(chunk)
        output[name] = b"".join(chunks)

    async def feed(stream: anyio.abc.ByteSendStream | None) -> None:
        assert stream is not None and stdin is not None
        try:
            await stream.send(stdin)
            await stream.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # the command exited without reading all its input (as `cmd1 | cmd2` allows):
            # its exit status tells what happened, not a broken pipe
            pass

    async with await anyio.open_process(
            list(argv), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL) as process:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, "stdout", process.stdout)
            tg.start_soon(drain, "stderr", process.stderr)
            if stdin is not None:
                tg.start_soon(feed, process.stdin)
        returncode = await process.wait()
    lines.close()
    return CompletedProcess(list(argv), returncode, output["stdout"], output["stderr"])
