"""Run commands on a remote host over ONE shared asyncssh connection.

Every coroutine that talks to a host shares one :class:`SshTransport`, hence one SSH
connection (opened lazily, under a lock, so a thousand jobs starting at once open it once).
Concurrent commands are exec channels on that connection, capped by a semaphore below
the server's ``MaxSessions`` (OpenSSH default 10: the 11th channel fails).

A dropped connection (the login node killed our sshd process, sshd restarted, the network
went away for a while) is reopened with jittered exponential backoff for up to
``retry_for`` seconds. What happens to the command that was running depends on when it
failed, and on what its caller declared:

* it never started (no connection, channel refused): it is always sent again;
* it started and the connection dropped before its exit status came back: it is sent
  again only if the caller passed ``retry=True`` (it is safe to repeat); otherwise a
  :class:`~wfl_async.errors.TransportError` says that it may or may not have run.

A host that has never answered is not waited for: a name that does not resolve or a closed
port fails the first call at once, anything else after a few seconds, naming the host, the
cause and the fix (:mod:`.connect_failure`); only a connection that once worked is retried
for ``retry_for``.

``~/.ssh/config`` (or the system's ``ssh_config`` files), keys, ``ProxyJump`` and known_hosts
are honoured; host keys are checked unless the system config sets ``"ssh_host_key_checking":
false``. A server's keyboard-interactive questions (a one-time code) are asked in the terminal,
or through ``SSH_ASKPASS``, once per connection (:mod:`.prompts`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import anyio

from ..errors import TransportError
from ._asyncssh import asyncssh
from .backoff import retry_attempts
from .base import CommandKind, LineCallback, LineSplitter, Transport
from .connect_failure import FIRST_CONNECT_SECONDS, ConnectFailed, cause_of_exception
from .host_keys import host_key_refusal
from .hosts import split_host
from .prompts import LOGIN_SECONDS, PromptingClient, can_prompt

__all__ = ["SshTransport"]

log = logging.getLogger(__name__)

_RETRYABLE = (asyncssh.Error, OSError)
"""What a dropped or refused connection raises: asyncssh's own errors (ConnectionLost,
DisconnectError, ChannelOpenError) and the socket's (ConnectionError, TimeoutError).
Authentication and host-key failures are asyncssh errors too, but are reported at once."""
_FATAL = (asyncssh.HostKeyNotVerifiable, asyncssh.PermissionDenied)


class _Dropped(Exception):
    """The command started, and the connection dropped before its exit status came back."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class SshTransport(Transport):
    """One host reached over ssh.

    :param host: ``[user@]host[:port]`` or an alias from the ssh config
    :param ssh_config: OpenSSH client config files to read (default ``~/.ssh/config``)
    :param max_channels: concurrent exec channels; keep below the server's MaxSessions
    :param host_key_checking: verify the server's key against known_hosts
    :param retry_for: seconds to keep reconnecting before a failure is reported (an sshd
        restart or a short network outage must not end a workflow)
    :param connect_attempts: tries before a failure is reported, if fewer than ``retry_for`` allows
    :param max_delay: longest pause between two tries (so the connection is back soon after the outage)
    :param retry_wait: the first pause between two tries (doubling after each, up to ``max_delay``)
    """

    def __init__(self, host: str, *, ssh_config: Sequence[str] | None = None, max_channels: int = 8,
                 host_key_checking: bool = True, retry_for: float = 600.0, connect_attempts: int | None = None,
                 max_delay: float = 2.0, retry_wait: float = 0.2) -> None:
        super().__init__()
        self.host, self._user, self._port = split_host(host)
        self._config = [str(Path(p).expanduser()) for p in ssh_config] if ssh_config else None
        self._channels = anyio.Semaphore(max_channels)
        self._max_channels = max_channels
        self._connect_lock = anyio.Lock()
        self._connection: asyncssh.SSHClientConnection | None = None
        self._host_key_checking = host_key_checking
        self._retry_for = retry_for
        self._attempts = connect_attempts
        self._max_delay = max_delay
        self._retry_wait = retry_wait
        self._ever_connected = False
        """A connection once worked: only then is a failure to connect retried for ``retry_for``."""

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

    def _backoff(self) -> AsyncIterator[int]:
        """Attempt numbers within the reconnect budget: ``retry_for`` once a connection has worked,
        a few seconds before that."""
        budget = self._retry_for if self._ever_connected else min(self._retry_for, FIRST_CONNECT_SECONDS)
        return retry_attempts(budget, self._retry_wait, self._max_delay, self._attempts)

    async def _get_connection(self) -> asyncssh.SSHClientConnection:
        """The open connection, or a new one (one try; the caller's backoff loop tries again)."""
        async with self._connect_lock:
            if self._connection is not None and not self._connection.is_closed():
                return self._connection
            try:
                self._connection = await self._connect()
            except asyncssh.HostKeyNotVerifiable as exc:
                raise TransportError(
                    f"ssh to {self.host} refused: {await host_key_refusal(self.host, self._connect_options(), exc)}"
                ) from exc
            except _FATAL as exc:
                raise TransportError(
                    f"ssh to {self.host} refused: {exc}. Check the key and known_hosts entries "
                    f"for this host in your ssh config (or set \"ssh_host_key_checking\": false "
                    f"for the system in config.json if you really mean it)") from exc
            self.stats.connections_opened += 1
            return self._connection

    async def _connect(self) -> asyncssh.SSHClientConnection:
        """One try at a new connection (ProxyJump from the ssh config, keyboard-interactive prompts answered).

        :raises ConnectFailed: the host never answered, and the cause will not mend by waiting
            (a name that does not resolve, a closed port)
        """
        options = self._connect_options()
        if not self._ever_connected:
            # asyncssh's timeout covers the login too: a person typing a one-time code gets longer
            options["connect_timeout"] = LOGIN_SECONDS if can_prompt() else FIRST_CONNECT_SECONDS
        try:
            connection = await asyncssh.connect(self.host, client_factory=lambda: PromptingClient(self.host),
                                                **options)
        except _RETRYABLE as exc:
            cause = None if self._ever_connected else cause_of_exception(exc)
            if cause is not None:
                raise ConnectFailed(self.host, cause, _describe(exc), self._config) from exc
            raise
        self._ever_connected = True
        return connection

    async def _run(self, command: str, stdin: bytes | None, on_line: LineCallback | None,
                   retry: bool, kind: CommandKind) -> CompletedProcess[bytes]:
        connected = False
        error: BaseException | None = None
        attempts = 0
        async for attempts in self._backoff():  # noqa: B007 - the last one is reported
            connected = False
            try:
                connection = await self._get_connection()
                connected = True
                return await self._run_once(connection, command, stdin, on_line)
            except _Dropped as dropped:
                error = dropped.cause
                await self._drop(connection)
                if not retry:
                    raise TransportError(
                        f"the connection to {self.host} dropped while a command was running; it may or may "
                        f"not have run, and is not safe to repeat: {error}") from error
                log.warning("connection to %s dropped during a command (%s); reconnecting and running it again",
                            self.host, error)
            except TransportError:
                raise  # refused for good (host key, authentication): no use trying again
            except _RETRYABLE as exc:
                error = exc
                # a refused channel on a live connection (the server's MaxSessions is below
                # max_channels) is no reason to close it under every other command in flight
                if connected and not (isinstance(exc, asyncssh.ChannelOpenError) and not connection.is_closed()):
                    await self._drop(connection)
                log.warning("%s to %s failed (%s); retrying", "command" if connected else "connecting",
                            self.host, _describe(exc))
        if not connected:
            if not self._ever_connected:
                raise ConnectFailed(self.host, "unreachable", f"no answer after {attempts} attempts: {error}",
                                    self._config) from error
            raise TransportError(f"could not connect to {self.host} after {attempts} attempts: {error}") from error
        hint = (f"; the server allows fewer concurrent sessions than max_channels={self._max_channels}: "
                f"lower \"max_channels\" for this system in config.json"
                if isinstance(error, asyncssh.ChannelOpenError) else "")
        raise TransportError(f"running a command on {self.host} failed after {attempts} attempts: "
                             f"{error}{hint}") from error

    async def _run_once(self, connection: asyncssh.SSHClientConnection, command: str, stdin: bytes | None,
                        on_line: LineCallback | None) -> CompletedProcess[bytes]:
        """One try, as asyncssh's own ``run`` (create_process + wait), handing stdout lines to ``on_line``.

        :raises _Dropped: the command started and the connection dropped before it ended
        """
        lines = LineSplitter(on_line)
        chunks: list[bytes] = []
        stderr: list[bytes] = []
        async with self._channels:
            # raises a _RETRYABLE before the command starts: it never ran
            process = await connection.create_process(command, encoding=None)
            try:
                async with process:
                    _feed(process, stdin)

                    async def read_stderr() -> None:
                        stderr.append(await process.stderr.read())

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(read_stderr)
                        while chunk := await process.stdout.read(65536):
                            chunks.append(chunk)
                            lines.feed(chunk)
                    completed = await process.wait(check=False)
            except BaseExceptionGroup as group:
                # both readers see a dropped connection: report the drop, not a group of two
                dropped, rest = group.split(_RETRYABLE)
                if rest is not None or dropped is None:
                    raise
                raise _Dropped(_first(dropped)) from None
            except _RETRYABLE as exc:
                raise _Dropped(exc) from None
        if completed.exit_status is None and completed.exit_signal is None:
            # the channel closed without an exit status: the connection dropped mid-command
            # (asyncssh does not raise then); never report that as the command's failure
            raise _Dropped(asyncssh.ConnectionLost("connection closed before the command's exit status arrived"))
        lines.close()
        returncode = completed.returncode if completed.returncode is not None else 255
        return CompletedProcess(command, returncode, b"".join(chunks), b"".join(stderr))

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


def _feed(process: asyncssh.SSHClientProcess[bytes], stdin: bytes | None) -> None:
    """Give the command its input and then end of input (also without stdin, as locally: a reader
    would hang otherwise).

    A command that exits without reading its input (``exit 4`` fed 4 MiB) closes the channel for
    sending: asyncssh then refuses the rest (BrokenPipeError). That is the command's choice, not a
    dropped connection: its output and exit status still come, and a real drop shows there.
    """
    try:
        if stdin:
            process.stdin.write(stdin)
        process.stdin.write_eof()
    except BrokenPipeError:
        pass


def _describe(exc: BaseException) -> str:
    """The exception's message, or its type when it has none (a timeout)."""
    return str(exc) or type(exc).__name__


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
