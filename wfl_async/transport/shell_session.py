"""Many commands through ONE long-lived shell on an ssh channel, instead of a channel per command.

Opening an exec channel, sending its request, its end of input, its exit status and closing it
is about ten packets, each encrypted and decrypted by asyncssh in Python: ~1.5-2 ms of driver
CPU for a trivial command, paid by every poll. A :class:`ShellSession` keeps one channel open
running a small read-eval loop in the user's login shell (so ``~/.bashrc``, ``module`` and the
rest are set up as for an exec channel); a command is then one write and one or two reads.

The framing, written by the driver and read by :data:`LOOP`:

* a header line ``<bytes of the command> <bytes of its stdin> <token>``, the command's shell
  text, then its stdin;
* the loop runs the text with ``eval`` in a subshell, so ``exit``, ``cd``, a syntax error or a
  changed variable never reaches the loop, while what ``~/.bashrc`` set up (functions and
  aliases too) is there as in an exec channel's shell; its stdin is ``/dev/null``, or exactly
  the bytes sent (``head -c``; what the command leaves unread is drained, so it is never taken
  for the next header); with :data:`SHOW_COMMANDS` set, the processes it starts find the
  text in ``$WFL_ASYNC_COMMAND``;
* then it prints ``\\n<token>\\n`` on stderr and ``\\n<token> <exit status>\\n`` on stdout; the
  driver strips them. The token is random per command, so no output can end a command early.

A command interrupted (cancelled, or the channel closing under it) leaves the loop in an unknown
place: its session is closed, never used again. Needs ``head -c`` (GNU coreutils, as GNU tar is
needed for file streams).
"""

from __future__ import annotations

import os
import uuid
from subprocess import CompletedProcess

import anyio

from ._asyncssh import asyncssh
from .base import LineCallback, LineSplitter

__all__ = ["LOOP", "SHOW_COMMANDS", "SessionLost", "ShellSession", "open_session"]

SHOW_COMMANDS = "WFL_ASYNC_SHOW_COMMANDS"
"""Set (to anything but empty) in the driver's environment: each command's processes get its text in
``$WFL_ASYNC_COMMAND``, where an exec channel's shell had it in its command line (for ``ps``, and the
fault-injection tests that find the driver's command by it). Off by default: a scheduler that passes
the submitting environment on (``sbatch``'s ``--export=ALL``) would store the text with every job."""

LOOP = (
    "printf '\\n%s\\n' \"$wfl_async_k\" >&2; printf '\\n%s 0\\n' \"$wfl_async_k\"; "
    "while IFS=' ' read -r wfl_async_n wfl_async_m wfl_async_k; do "
    "wfl_async_t=$(head -c \"$wfl_async_n\"); "
    "if [ \"$wfl_async_m\" -gt 0 ]; then head -c \"$wfl_async_m\" | "
    "( ( {show}eval \"$wfl_async_t\" ); wfl_async_r=$?; cat >/dev/null; exit $wfl_async_r ); "
    "else ( {show}eval \"$wfl_async_t\" ) </dev/null; fi; wfl_async_r=$?; "
    "printf '\\n%s\\n' \"$wfl_async_k\" >&2; printf '\\n%s %d\\n' \"$wfl_async_k\" \"$wfl_async_r\"; done"
)
"""The channel's command: announce itself (token ``$wfl_async_k``, set before it), then run framed commands
(``{show}``: what :data:`SHOW_COMMANDS` adds before each)."""

_TAIL = 16
"""Bytes after the token on stdout at most: a space, the exit status, a newline (and room to spare)."""


class SessionLost(Exception):
    """The session's channel closed while a command was running (it may or may not have run)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause


class ShellSession(asyncssh.SSHClientSession[bytes]):
    """One channel running :data:`LOOP`; one command at a time (the caller holds it while it runs).

    :param ready: the token the loop announces itself with (the first "command" to wait for)
    """

    def __init__(self, ready: bytes) -> None:
        self._channel: asyncssh.SSHClientChannel[bytes] | None = None
        self._out = bytearray()
        self._err = bytearray()
        self.lost: BaseException | None = None
        """Why the channel closed (None: still open)."""
        self._token = ready
        self._fed = 0
        self._status: int | None = None
        self._err_done = False
        self._lines = LineSplitter(None)
        self._done = anyio.Event()

    # ------------------------------------------------------------------ asyncssh's callbacks
    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self._channel = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self._err += data
            self._err_done = self._err.endswith(b"\n" + self._token + b"\n")
        else:
            self._out += data
            self._stdout_arrived()
        if self._status is not None and self._err_done:
            self._done.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or asyncssh.ConnectionLost("the shell session's channel closed")
        self._done.set()

    def _stdout_arrived(self) -> None:
        out = self._out
        if out.endswith(b"\n"):
            at = out.rfind(b"\n" + self._token + b" ", max(0, len(out) - len(self._token) - _TAIL))
            if at >= 0:
                self._status = int(out[at + len(self._token) + 2:-1])
                self._feed(at)
                del out[at:]
                return
        # hold back what may be the start of the end line
        self._feed(len(out) - len(self._token) - _TAIL)

    def _feed(self, upto: int) -> None:
        if self._lines.on_line is not None and upto > self._fed:
            self._lines.feed(bytes(self._out[self._fed:upto]))
            self._fed = upto

    # ------------------------------------------------------------------ commands
    def _begin(self, token: bytes, on_line: LineCallback | None) -> None:
        """Expect the end of the command named ``token`` next."""
        self._out.clear()
        self._err.clear()
        self._token, self._fed, self._status, self._err_done = token, 0, None, False
        self._lines = LineSplitter(on_line)
        self._done = anyio.Event()

    async def _wait(self) -> tuple[int, bytes, bytes]:
        """The exit status, stdout and stderr of the command :meth:`_begin` named, once its end came."""
        await self._done.wait()
        if self._status is None or not self._err_done:
            raise SessionLost(self.lost or asyncssh.ConnectionLost("the shell session ended mid-command"))
        self._lines.close()
        del self._err[len(self._err) - len(self._token) - 2:]
        return self._status, bytes(self._out), bytes(self._err)

    async def run(self, command: str, stdin: bytes | None, on_line: LineCallback | None) -> CompletedProcess[bytes]:
        """Run shell text ``command`` with ``stdin`` (None: ``/dev/null``); its stdout lines go to ``on_line``.

        :raises SessionLost: the channel closed before the command's end came back; the session
            is then unusable (so is it after a cancellation: the caller closes it)
        """
        if self.lost is not None:
            raise SessionLost(self.lost)
        assert self._channel is not None
        token = uuid.uuid4().hex.encode()
        text = command.encode()
        data = stdin or b""
        self._begin(token, on_line)
        self._channel.write(b"%d %d %s\n%s%s" % (len(text), len(data), token, text, data))
        status, out, err = await self._wait()
        return CompletedProcess(command, status, out, err)

    def close(self) -> None:
        """Close the channel (the loop ends at the end of its input); a command in flight is abandoned."""
        if self._channel is not None:
            self._channel.close()


async def open_session(connection: asyncssh.SSHClientConnection) -> ShellSession:
    """A new :class:`ShellSession` on ``connection``, ready for commands (its login shell's output is dropped).

    :raises asyncssh.Error: the channel was refused (nothing ran)
    :raises SessionLost: the shell ended before it was ready
    """
    token = uuid.uuid4().hex
    session = ShellSession(token.encode())
    show = 'export WFL_ASYNC_COMMAND="$wfl_async_t"; ' if os.environ.get(SHOW_COMMANDS) else ""
    await connection.create_session(lambda: session, f"wfl_async_k={token}; {LOOP.format(show=show)}",
                                    encoding=None)
    try:
        await session._wait()
    except BaseException:
        session.close()
        raise
    return session
