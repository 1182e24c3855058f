"""Run commands on this machine, through ``/bin/sh -c`` in a subprocess."""

from __future__ import annotations

import subprocess
from subprocess import CompletedProcess

import anyio

from .base import Transport

__all__ = ["LocalTransport"]


class LocalTransport(Transport):
    """The transport of systems with ``"host": null``."""

    @property
    def where(self) -> str:
        return "this machine"

    async def _run(self, command: str, stdin: bytes | None) -> CompletedProcess[bytes]:
        return await anyio.run_process(["/bin/sh", "-c", command], input=stdin,
                                       stdin=None if stdin is not None else subprocess.DEVNULL, check=False)
