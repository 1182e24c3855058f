"""Run commands through the system's own OpenSSH client, over one multiplexed master connection.

For sites the asyncssh transport cannot log in to by itself: two-factor logins (a one-time
code at each new connection), which users meet with OpenSSH's ControlMaster (log in once,
every later ``ssh`` rides that connection), and whatever else only the user's
``~/.ssh/config`` and OpenSSH know (ProxyCommand, GSSAPI, hardware keys). Chosen with
``"transport": "openssh"`` in the system's entry of config.json.

Costs are the asyncssh transport's: each command is one ``ssh`` process riding the master
connection through its local socket (no new login, no new TCP connection), so a poll is one
command and files travel as one tar stream on its stdin/stdout (the base class's
upload/download). Concurrent commands are capped by ``max_channels`` (the server's
MaxSessions counts multiplexed sessions too).

The master connection:

* the user's ``ControlPath`` (and ``ControlPersist``) from their ssh config when set, else
  ``~/.ssh/wfl_async_cm/%C`` and 10 minutes; a master the user opened in a terminal with a
  one-time code is used as it is;
* when there is none, one is opened with ``BatchMode`` (keys and agent); a site that asks a
  question (a one-time code) is asked in the terminal, or through ``SSH_ASKPASS``, when the
  driver has either (see :mod:`.prompts`);
* when it drops while a workflow runs and nobody can answer the login's question, the log
  says once how to log in again (the exact command) and the transport keeps trying for its
  reconnect window, so the run goes on as soon as the user has logged in. Commands follow the
  asyncssh transport's rules: one that never started is sent again; one cut short is sent
  again only if its caller declared it safe (``retry=True``), else it fails saying that it may
  or may not have run. Nothing is lost or run twice that the caller did not allow.

The master is left running when the transport closes: ``ControlPersist`` ends it, and the next
run uses it without a new login. ``stats.connections_opened`` counts the masters this transport
rode, whether it opened them or found them up; a master the ssh client reopened by itself (a
keys-only site, ``ControlMaster=auto``) is not seen.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from subprocess import CompletedProcess

import anyio

from ..errors import ConfigurationError, TransportError
from .backoff import retry_attempts
from .base import CommandKind, LineCallback, Transport
from .connect_failure import FIRST_CONNECT_SECONDS, ConnectCause, ConnectFailed, cause_of_ssh_stderr
from .hosts import split_host
from .local import run_process
from .prompts import LOGIN_SECONDS, can_prompt

__all__ = ["OpenSshTransport"]

log = logging.getLogger(__name__)

MASTER_PERSIST = "10m"
"""How long a master this transport opened outlives its last command (when the ssh config says nothing)."""
_LOST = re.compile(r"closed by remote host|Connection to \S+ closed|mux_client|Control socket|Broken pipe|"
                   r"client_loop|Connection reset|kex_exchange_identification|Timeout, server")
"""What the OpenSSH client prints when the connection (or its master) went away under a command."""
_SESSION_REFUSED = re.compile(r"Session open refused|session request failed|open failed")
"""The server refused one more session on the master (its MaxSessions): the command never started."""


class _MasterDown(Exception):
    """The master connection is gone, and a new one could not be opened now (maybe later)."""

    def __init__(self, cause: ConnectCause | None, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause


class OpenSshTransport(Transport):
    """One host reached through the ``ssh`` program and one ControlMaster connection.

    :param host: ``[user@]host[:port]`` or an alias from the ssh config
    :param ssh_config: the OpenSSH client config file (``ssh -F``; default ``~/.ssh/config``)
    :param max_channels: concurrent commands; keep below the server's MaxSessions
    :param host_key_checking: verify the server's key against known_hosts
    :param retry_for: seconds to keep reconnecting (and waiting for a login) once a connection has worked
    :param connect_attempts: tries before a failure is reported, if fewer than ``retry_for`` allows
    :param max_delay: longest pause between two tries
    :param retry_wait: the first pause between two tries
    :param ssh: the OpenSSH client program
    """

    def __init__(self, host: str, *, ssh_config: Sequence[str] | None = None, max_channels: int = 8,
                 host_key_checking: bool = True, retry_for: float = 600.0, connect_attempts: int | None = None,
                 max_delay: float = 2.0, retry_wait: float = 0.2, ssh: str = "ssh") -> None:
        super().__init__()
        self.host, self._user, self._port = split_host(host)
        if ssh_config is not None and len(ssh_config) > 1:
            raise ConfigurationError(f"the OpenSSH client reads one config file (ssh -F), not {list(ssh_config)}: "
                                     f"name one in \"ssh_config\" (it may Include the others)")
        self._config = str(Path(ssh_config[0]).expanduser()) if ssh_config else None
        self._ssh = ssh
        self._host_key_checking = host_key_checking
        self._channels = anyio.Semaphore(max_channels)
        self._lock = anyio.Lock()
        self._control: list[str] | None = None
        self._master_up = False
        self._ever_connected = False
        self._told = False
        self._retry_for, self._attempts = retry_for, connect_attempts
        self._max_delay, self._retry_wait = max_delay, retry_wait

    @property
    def where(self) -> str:
        return f"ssh host {self.host}"

    # ------------------------------------------------------------------ command lines
    def _base(self) -> list[str]:
        argv = [self._ssh]
        if self._config is not None:
            argv += ["-F", self._config]
        if self._user:
            argv += ["-l", self._user]
        if self._port:
            argv += ["-p", str(self._port)]
        if not self._host_key_checking:
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        return argv

    async def _control_options(self) -> list[str]:
        """``-o`` options for the master's socket: only what the user's ssh config leaves unset."""
        if self._control is None:
            result = await run_process([*self._base(), "-G", "--", self.host], None, None)
            if result.returncode != 0:
                raise ConfigurationError(f"OpenSSH cannot read its configuration for {self.host}: "
                                         f"{result.stderr.decode(errors='replace').strip()}; fix the ssh config "
                                         f"({self._config or '~/.ssh/config'})")
            settings = dict(line.split(" ", 1) for line in result.stdout.decode().splitlines() if " " in line)
            options = []
            if settings.get("controlpath", "none") == "none":
                sockets = Path.home() / ".ssh" / "wfl_async_cm"
                sockets.mkdir(mode=0o700, parents=True, exist_ok=True)
                options += ["-o", f"ControlPath={sockets}/%C"]
            if settings.get("controlpersist", "no") == "no":
                options += ["-o", f"ControlPersist={MASTER_PERSIST}"]
            self._control = options
        return self._control

    async def _command_argv(self, command: str) -> list[str]:
        # ControlMaster=auto: a command that finds no master opens one itself when keys suffice
        # (never a question: BatchMode), so a keys-only site reconnects without any help
        return [*self._base(), *await self._control_options(), "-T", "-o", "BatchMode=yes",
                "-o", "ControlMaster=auto", "-o", f"ConnectTimeout={FIRST_CONNECT_SECONDS:.0f}",
                "--", self.host, command]

    async def login_argv(self, batch: bool = False) -> list[str]:
        """The command opening the master connection (what the user runs to log in again)."""
        # auto, not yes: a master killed outright leaves its socket behind, and only a client removes it
        return [*self._base(), *await self._control_options(), "-o", "ControlMaster=auto",
                *(["-o", "BatchMode=yes"] if batch else []), "-o", f"ConnectTimeout={FIRST_CONNECT_SECONDS:.0f}",
                "-f", "-N", "--", self.host]

    # ------------------------------------------------------------------ the master
    async def _master_alive(self) -> bool:
        result = await run_process([*self._base(), *await self._control_options(), "-O", "check", "--", self.host],
                                   None, None)
        return result.returncode == 0

    async def _login(self, batch: bool) -> tuple[int, str]:
        """Open the master; its exit status and what it printed.

        Not through pipes: the master stays in the background holding whatever it was given as
        stdout/stderr, so a pipe would never reach its end. A login that asks a question gets the
        terminal (or SSH_ASKPASS) as it is.
        """
        argv = await self.login_argv(batch)
        with tempfile.TemporaryFile() as errors:
            interactive = not batch
            run = partial(subprocess.run, argv, stdin=None if interactive else subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=None if interactive else errors, check=False,
                          timeout=LOGIN_SECONDS)
            try:
                returncode = (await anyio.to_thread.run_sync(run)).returncode
            except subprocess.TimeoutExpired:
                return 255, f"no login within {LOGIN_SECONDS:.0f} s"
            errors.seek(0)
            return returncode, errors.read().decode(errors="replace").strip()

    async def _ensure_master(self) -> None:
        """A master connection is up (found, or opened now).

        :raises ConnectFailed: no connection has ever worked, and this one failed
        :raises _MasterDown: the master is gone and cannot be opened now
        """
        if self._master_up:
            return
        async with self._lock:
            if self._master_up:
                return
            if not await self._master_alive():
                await self._open_master()
            # counted whether opened now or found (the user's login, or an earlier run's, persists)
            self.stats.connections_opened += 1
            self._master_up = self._ever_connected = True
            if self._told:
                log.warning("the ssh connection to %s is back", self.host)
                self._told = False

    async def _open_master(self) -> None:
        returncode, detail = await self._login(batch=True)
        cause = cause_of_ssh_stderr(detail) if returncode else None
        if cause == "auth" and can_prompt():
            log.warning("%s asks for more than a key (e.g. a one-time code): logging in once for this run", self.host)
            returncode, detail = await self._login(batch=False)
            cause = cause_of_ssh_stderr(detail) if returncode else None
        if returncode == 0:
            return
        detail = detail or f"ssh exited with status {returncode}"
        if not self._ever_connected:
            raise ConnectFailed(self.host, cause or "unreachable", detail, [self._config] if self._config else None,
                                login_command=shlex.join(await self.login_argv()))
        raise _MasterDown(cause, detail)

    async def _tell_login(self, down: _MasterDown) -> None:
        """Once per outage: say why, and the command that logs in again."""
        if self._told:
            return
        self._told = True
        what = ("needs a new login" if down.cause == "auth" else f"cannot be opened again now ({down})")
        log.warning("the ssh master connection to %s is gone and %s. Log in again in a terminal with:\n    %s\n"
                    "Waiting up to %.0f s for it; nothing is lost meanwhile.", self.host, what,
                    shlex.join(await self.login_argv()), self._retry_for)

    # ------------------------------------------------------------------ commands
    def _backoff(self) -> AsyncIterator[int]:
        budget = self._retry_for if self._ever_connected else min(self._retry_for, FIRST_CONNECT_SECONDS)
        return retry_attempts(budget, self._retry_wait, self._max_delay, self._attempts)

    async def _run(self, command: str, stdin: bytes | None, on_line: LineCallback | None,
                   retry: bool, kind: CommandKind) -> CompletedProcess[bytes]:
        del kind  # nothing here answers by purpose
        error = ""
        attempt = 0
        async for attempt in self._backoff():  # noqa: B007 - the last one is reported
            try:
                await self._ensure_master()
            except _MasterDown as down:
                error = str(down)
                await self._tell_login(down)
                continue
            argv = await self._command_argv(command)
            async with self._channels:
                result = await run_process(argv, stdin, on_line)
            if result.returncode != 255:
                return result
            stderr = result.stderr.decode(errors="replace")
            error = " ".join(stderr.split())[-300:] or "ssh exited with status 255"
            if _SESSION_REFUSED.search(stderr):
                log.warning("command to %s failed (%s); retrying", self.host, error)
                continue
            cause = cause_of_ssh_stderr(stderr)
            if cause is None and not _LOST.search(stderr) and await self._master_alive():
                return result  # the command's own exit status 255, over a healthy connection
            self._master_up = False
            if cause is not None:  # the command never reached the host
                log.warning("connecting to %s failed (%s); retrying", self.host, error)
                continue
            if not retry:
                raise TransportError(f"the connection to {self.host} dropped while a command was running; it may "
                                     f"or may not have run, and is not safe to repeat: {error}")
            log.warning("connection to %s dropped during a command (%s); reconnecting and running it again",
                        self.host, error)
        raise TransportError(f"running a command on {self.host} failed after {attempt} attempts: {error}")

    async def aclose(self) -> None:
        """Forget the master (it keeps running until its ``ControlPersist`` ends); the next command looks again."""
        self._master_up = False
