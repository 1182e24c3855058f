"""Run commands on a remote host over ONE shared asyncssh connection.

Every coroutine that talks to a host shares one :class:`SshTransport`, hence one SSH
connection (opened lazily, under a lock, so a thousand jobs starting at once open it once).
Concurrent commands are exec channels on that connection, capped by a semaphore below
the server's ``MaxSessions`` (OpenSSH default 10: the 11th channel fails). A dropped
connection is reopened with jittered exponential backoff, and the command retried, since
every command this package sends is safe to repeat (submission is guarded by a marker).
``~/.ssh/config`` (or the system's ``ssh_config`` files), keys, and known_hosts are honoured;
host keys are checked unless the system config sets ``"ssh_host_key_checking": false``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import anyio
import asyncssh

from ..errors import TransportError
from .base import LineCallback, LineSplitter, Transport

__all__ = ["SshTransport"]

log = logging.getLogger(__name__)

_RETRYABLE = (asyncssh.ConnectionLost, asyncssh.DisconnectError, ConnectionError, asyncssh.ChannelOpenError,
              TimeoutError, OSError)


class SshTransport(Transport):
    """One host reached over ssh.

    :param host: ``[user@]host[:port]`` or an alias from the ssh config
    :param ssh_config: OpenSSH client config files to read (default ``~/.ssh/config``)
    :param max_channels: concurrent exec channels; keep below the server's MaxSessions
    :param host_key_checking: verify the server's key against known_hosts
    :param connect_attempts: tries before a connection failure is reported
    :param retry_wait: seconds before the first retry (doubling after each, at most 10 s)
    """

    def __init__(self, host: str, *, ssh_config: Sequence[str] | None = None, max_channels: int = 8,
                 host_key_checking: bool = True, connect_attempts: int = 6, retry_wait: float = 0.2) -> None:
        super().__init__()
        self.host, self._user, self._port = _split_host(host)
        self._config = [str(Path(p).expanduser()) for p in ssh_config] if ssh_config else None
        self._channels = anyio.Semaphore(max_channels)
        self._max_channels = max_channels
        self._connect_lock = anyio.Lock()
        self._connection: asyncssh.SSHClientConnection | None = None
        self._host_key_checking = host_key_checking
        self._connect_attempts = connect_attempts
        self._retry_wait = retry_wait

    @property
    def where(self) -> str:
        return f"ssh host {self.host}"

    def _connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self._config is not None:
            options["config"] = self._config
        if self._user:
            options["username"] = self._user
        if self._port:
            options["port"] = self._port
        if not self._host_key_checking:
            options["known_hosts"] = None
        return options

    async def _get_connection(self) -> asyncssh.SSHClientConnection:
        async with self._connect_lock:
            if self._connection is not None and not self._connection.is_closed():
                return self._connection
            delay = self._retry_wait
            for attempt in range(1, self._connect_attempts + 1):
                try:
                    self._connection = await asyncssh.connect(self.host, **self._connect_options())
                    self.stats.connections_opened += 1
                    return self._connection
                except (asyncssh.HostKeyNotVerifiable, asyncssh.PermissionDenied) as exc:
                    raise TransportError(
                        f"ssh to {self.host} refused: {exc}. Check the key and known_hosts entries "
                        f"for this host in your ssh config (or set \"ssh_host_key_checking\": false "
                        f"for the system in config.json if you really mean it)") from exc
                except (OSError, asyncssh.Error) as exc:
                    if attempt == self._connect_attempts:
                        raise TransportError(f"could not connect to {self.host} after {attempt} attempts: "
                                             f"{exc}") from exc
                    log.warning("connecting to %s failed (%s); retrying in %.1f s", self.host, exc, delay)
                    await anyio.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, 10.0)
            raise AssertionError("unreachable")

    async def _run(self, command: str, stdin: bytes | None, on_line: LineCallback | None) -> CompletedProcess[bytes]:
        delay = self._retry_wait
        for attempt in range(1, self._connect_attempts + 1):
            connection = await self._get_connection()
            try:
                async with self._channels:
                    if on_line is None:
                        # stdin=DEVNULL: without input the command sees end-of-file, as locally
                        # (asyncssh sends EOF only after a non-empty input; a reader would hang)
                        result = await connection.run(command, input=stdin or None, stdin=asyncssh.DEVNULL,
                                                      encoding=None, check=False)
                    else:
                        result = await _run_streaming(connection, command, stdin, LineSplitter(on_line))
                if result.exit_status is None and result.exit_signal is None:
                    # the channel closed without an exit status: the connection dropped mid-command
                    # (asyncssh does not raise then); never report that as the command's failure
                    raise asyncssh.ConnectionLost("connection closed before the command's exit status arrived")
                return CompletedProcess(command, result.returncode if result.returncode is not None else 255,
                                        _as_bytes(result.stdout), _as_bytes(result.stderr))
            except _RETRYABLE as exc:
                # a refused channel on a live connection (the server's MaxSessions is below
                # max_channels) is no reason to close it under every other command in flight
                refused = isinstance(exc, asyncssh.ChannelOpenError) and not connection.is_closed()
                if attempt == self._connect_attempts:
                    hint = (f"; the server allows fewer concurrent sessions than max_channels="
                            f"{self._max_channels}: lower \"max_channels\" for this system in config.json"
                            if refused else "")
                    raise TransportError(f"running a command on {self.host} failed: {exc}{hint}") from exc
                log.warning("command on %s failed (%s); %s in %.1f s", self.host, exc,
                            "retrying" if refused else "reconnecting", delay)
                if not refused:
                    await self._drop(connection)
                await anyio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    async def _drop(self, connection: asyncssh.SSHClientConnection) -> None:
        async with self._connect_lock:
            if self._connection is connection:
                self._connection = None
        connection.close()

    async def aclose(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
            await connection.wait_closed()


async def _run_streaming(connection: asyncssh.SSHClientConnection, command: str, stdin: bytes | None,
                         lines: LineSplitter) -> asyncssh.SSHCompletedProcess:
    """Like ``connection.run``, handing each stdout line to ``lines`` as it arrives."""
    chunks: list[bytes] = []
    async with connection.create_process(command, encoding=None) as process:
        if stdin:
            process.stdin.write(stdin)
        process.stdin.write_eof()

        async def read_stdout() -> None:
            while chunk := await process.stdout.read(65536):
                chunks.append(chunk)
                lines.feed(chunk)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_stdout)
            stderr = await process.stderr.read()
        lines.close()
        completed = await process.wait(check=False)
    completed.stdout, completed.stderr = b"".join(chunks), stderr  # wait() found them already read
    return completed


def _as_bytes(data: bytes | str | None) -> bytes:
    if data is None:
        return b""
    return data.encode() if isinstance(data, str) else data


def _split_host(host: str) -> tuple[str, str | None, int | None]:
    user, _, rest = host.rpartition("@")
    name, sep, port = rest.partition(":")
    return name, user or None, int(port) if sep and port.isdigit() else None
