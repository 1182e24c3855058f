"""Why a host that has never answered will not answer: the causes that fail at once, with their fixes.

A connection that once worked is retried for the transport's whole reconnect window (a
restarted sshd, a short network outage). A host that never answered is different: a
mistyped name, a closed port or a refused login will not mend themselves in ten minutes,
so the first call fails within seconds, naming the host, the cause and the fix. Both ssh
transports (asyncssh and the OpenSSH client) classify their failures into the same causes
here, so the messages are the same whichever carries the commands.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from typing import Literal

from ..errors import TransportError

__all__ = ["FIRST_CONNECT_SECONDS", "ConnectCause", "ConnectFailed", "cause_of_exception", "cause_of_ssh_stderr"]

FIRST_CONNECT_SECONDS = 10.0
"""How long a host that never answered is tried (a slow or flaky first connect), when the
cause is not one that fails at once."""

ConnectCause = Literal["unresolvable", "refused", "auth", "host_key", "unreachable"]

_STDERR_CAUSES: tuple[tuple[str, ConnectCause], ...] = (
    (r"Could not resolve hostname|Name or service not known|nodename nor servname", "unresolvable"),
    (r"Connection refused", "refused"),
    (r"Permission denied|Too many authentication failures|No more authentication methods", "auth"),
    (r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .* host key is known", "host_key"),
    (r"Connection timed out|No route to host|Network is unreachable|Operation timed out", "unreachable"),
)


class ConnectFailed(TransportError):
    """The host could not be reached or refused the login; nothing was run there.

    :ivar host: the host as configured
    :ivar cause: what went wrong (:data:`ConnectCause`)
    :ivar problem: one line saying what went wrong
    :ivar fix: one line saying what to do about it
    """

    def __init__(self, host: str, cause: ConnectCause, detail: str, config_files: Sequence[str] | None,
                 *, login_command: str | None = None) -> None:
        self.host, self.cause = host, cause
        files = ", ".join(config_files or ["~/.ssh/config"])
        detail = " ".join(detail.split())[-300:]
        self.problem, self.fix = _explain(host, cause, detail, files, login_command)
        super().__init__(f"{self.problem}. Fix: {self.fix}")


def _explain(host: str, cause: ConnectCause, detail: str, files: str, login_command: str | None) -> tuple[str, str]:
    """The problem and the fix; ``login_command`` opens the OpenSSH master connection (that transport only)."""
    check = f"'ssh {host} true' must work"
    if cause == "unresolvable":
        return (f"the host name {host!r} does not resolve to an address ({detail})",
                f"check the spelling of \"host\" in config.json, or its HostName in {files}: {check}")
    if cause == "refused":
        return (f"nothing accepts ssh connections at {host} ({detail})",
                f"check the port (\"host\": \"name:port\" in config.json, or Port in {files}) and that the "
                f"login node is up: {check}")
    if cause == "host_key":
        return (f"the host key of {host} is not the one known ({detail})",
                f"run 'ssh {host} true' once (with the ssh config {files}) to check and record its key in "
                f"known_hosts, or add the key to the UserKnownHostsFile named there")
    if cause == "auth" and login_command is not None:
        return (f"ssh to {host} needs a login that nobody can answer here ({detail})",
                f"log in once in a terminal with: {login_command} (it asks for the one-time code if the site "
                f"wants one, and keeps the connection open for the next runs), then run again")
    if cause == "auth":
        hint = ("; a site that asks for a one-time code needs a terminal, or \"transport\": \"openssh\" with "
                "a ControlMaster login (docs/site-two-factor.md)")
        return (f"ssh to {host} was refused ({detail})",
                f"make 'ssh {host} true' work without a password: check User and IdentityFile for {host} in "
                f"{files}, and that your key is in ssh-agent{hint}")
    return (f"cannot reach {host} ({detail})",
            f"check the host name, port and proxy (ProxyJump) for {host} in {files}: {check}")


def cause_of_exception(exc: BaseException) -> ConnectCause | None:
    """The cause of a socket-level failure to connect, or None if it may be passing."""
    if isinstance(exc, socket.gaierror):
        return "unresolvable"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return None


def cause_of_ssh_stderr(stderr: str) -> ConnectCause | None:
    """The cause of an OpenSSH client's failure (exit status 255) from what it printed, or None."""
    for pattern, cause in _STDERR_CAUSES:
        if re.search(pattern, stderr):
            return cause
    return None
