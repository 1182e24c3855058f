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
from ._asyncssh import asyncssh, get_default_encryption_algs
from .backoff import retry_attempts
from .base import CommandKind, LineCallback, Transport
from .connect_failure import FIRST_CONNECT_SECONDS, ConnectFailed, cause_of_exception
from .host_keys import host_key_refusal
from .hosts import split_host
from .prompts import LOGIN_SECONDS, PromptingClient, can_prompt
from .shell_session import SessionLost, ShellSession, open_session

__all__ = ["SshTransport"]

log = logging.getLogger(__name__)

_RETRYABLE = (asyncssh.Error, OSError)
"""What a dropped or refused connection raises: asyncssh's own errors (ConnectionLost,
DisconnectError, ChannelOpenError) and the socket's (ConnectionError, TimeoutError).
Authentication and host-key failures are asyncssh errors too, but are reported at once."""
_FATAL = (asyncssh.HostKeyNotVerifiable, asyncssh.PermissionDenied)
_PREFERRED_CIPHERS = [b"aes128-gcm@openssh.com", b"aes256-gcm@openssh.com"]
"""Offered first when the ssh config names no ciphers (see :meth:`SshTransport._cipher_preference`)."""


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
        self._idle: list[tuple[asyncssh.SSHClientConnection, ShellSession]] = []
        """Shell sessions waiting for a command (at most ``max_channels``: each was opened under the semaphore)."""
        self._host_key_checking = host_key_checking
        self._retry_for = retry_for
        self._attempts = connect_attempts
        self._max_delay = max_delay
        self._retry_wait = retry_wait
        self._ever_connected = False
        self._ciphers: list[str] | None = None
        """The encryption algorithms to offer, by preference (empty: the ssh config's or asyncssh's own)."""
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
        if self._connection is not None and not self._connection.is_closed():
            return self._connection  # (no lock: every command asks)
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
        options.update(self._cipher_preference(options))
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

    def _cipher_preference(self, options: dict[str, Any]) -> dict[str, Any]:
        """AES-GCM before chacha20-poly1305, unless the ssh config chose the ciphers (``Ciphers``).

        Both are OpenSSH defaults and equally strong; asyncssh decrypts an AES-GCM packet in one
        call of ``cryptography`` and a chacha20-poly1305 one with three cipher contexts, so a
        small command costs the driver about a third less CPU (benchmarks/job_cost.py).
        """
        if self._ciphers is None:
            try:
                chosen = list(asyncssh.SSHClientConnectionOptions(host=self.host, **options).encryption_algs)
            except (asyncssh.Error, OSError, ValueError):
                chosen = []  # connecting reports what is wrong with the config
            defaults = list(get_default_encryption_algs())
            self._ciphers = ([a.decode() for a in _PREFERRED_CIPHERS + [d for d in defaults if d not in _PREFERRED_CIPHERS]]
                             if chosen == defaults else [])
        return {"encryption_algs": self._ciphers} if self._ciphers else {}

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
                return await self._run_once(connection, command, stdin, on_line, retry)
            except _Dropped as dropped:
                error = dropped.cause
                if connection.is_closed():  # a session that ended alone leaves the connection to the others
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
                        on_line: LineCallback | None, retry: bool) -> CompletedProcess[bytes]:
        """One try, in an idle shell session of ``connection`` or a new one (:mod:`.shell_session`),
        handing stdout lines to ``on_line``.

        A command not safe to repeat goes to an idle session only once a no-op came back through it:
        a connection that dropped while the session waited (unnoticed until something is sent) must
        fail a command that never ran, not one that may have.

        :raises _Dropped: the command started and its session closed before it ended
        """
        async with self._channels:
            session = self._idle_session(connection)
            # each raises a _RETRYABLE before the command starts: it never ran
            if session is None:
                session = await open_session(connection)
            elif not retry:
                await self._alive(session)
            try:
                result = await session.run(command, stdin, on_line)
            except SessionLost as lost:
                session.close()
                raise _Dropped(lost.cause) from None
            except BaseException:  # cancelled mid-command: the session is in an unknown place
                session.close()
                raise
            self._idle.append((connection, session))
            return result

    @staticmethod
    async def _alive(session: ShellSession) -> None:
        """A no-op through ``session``; its loss is raised as a connection lost before any command ran."""
        try:
            await session.run(":", None, None)
        except SessionLost as lost:
            session.close()
            raise asyncssh.ConnectionLost(f"idle shell session lost: {lost}") from None
        except BaseException:
            session.close()
            raise

    def _idle_session(self, connection: asyncssh.SSHClientConnection) -> ShellSession | None:
        """A shell session of ``connection`` waiting for a command; those of older connections are forgotten."""
        while self._idle:
            owner, session = self._idle.pop()
            if owner is connection and session.lost is None:
                return session
            session.close()
        return None

    async def _drop(self, connection: asyncssh.SSHClientConnection) -> None:
        async with self._connect_lock:
            if self._connection is connection:
                self._connection = None
        connection.close()

    async def aclose(self) -> None:
        self._idle.clear()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
            await connection.wait_closed()


def _describe(exc: BaseException) -> str:
    """The exception's message, or its type when it has none (a timeout)."""
    return str(exc) or type(exc).__name__

