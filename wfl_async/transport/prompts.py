"""Answering a login's questions (a one-time code, a password) the way OpenSSH's client does.

Sites with two-factor logins ask a keyboard-interactive question at each new connection.
The user answers it in the terminal, once per connection; without a terminal, the program
named by ``SSH_ASKPASS`` answers it, under OpenSSH's own rules (``SSH_ASKPASS_REQUIRE=force``
always, ``prefer`` or no terminal with a ``DISPLAY`` otherwise), so one setting serves both
transports. With neither, the question cannot be answered and the login fails with a
message that says so.
"""

from __future__ import annotations

import getpass
import logging
import os
import subprocess
import sys
from collections.abc import Sequence

import anyio

from ._asyncssh import asyncssh

__all__ = ["LOGIN_SECONDS", "PromptingClient", "ask", "askpass_program", "can_prompt", "has_terminal"]

log = logging.getLogger(__name__)

LOGIN_SECONDS = 300.0
"""Longest a login that asks a question may take: a person may be typing a one-time code."""


def has_terminal() -> bool:
    """Whether a person at a terminal can be asked (stdin is one and /dev/tty opens)."""
    try:
        with open("/dev/tty"):
            return sys.stdin is not None and sys.stdin.isatty()
    except OSError:
        return False


def askpass_program() -> str | None:
    """The ``SSH_ASKPASS`` program to ask, if OpenSSH's rules would use it now."""
    program = os.environ.get("SSH_ASKPASS")
    require = os.environ.get("SSH_ASKPASS_REQUIRE", "")
    if not program or require == "never":
        return None
    if require in ("force", "prefer"):
        return program
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    return program if display and not has_terminal() else None


def can_prompt() -> bool:
    """Whether a login's question can be answered at all (a terminal, or an askpass program)."""
    return askpass_program() is not None or has_terminal()


def ask(prompt: str, echo: bool) -> str | None:
    """Ask ``prompt``; the answer, or None when nobody can be asked. Blocks: run it in a thread."""
    program = askpass_program()
    if program is not None:
        try:
            answer = subprocess.run([program, prompt], capture_output=True, text=True, check=True,
                                    timeout=LOGIN_SECONDS).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("SSH_ASKPASS program %s did not answer %r: %s", program, prompt, exc)
            return None
        return answer.rstrip("\n")
    if not has_terminal():
        return None
    if echo:
        sys.stderr.write(prompt)
        sys.stderr.flush()
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


class PromptingClient(asyncssh.SSHClient):
    """An asyncssh client that puts the server's keyboard-interactive questions to the user."""

    def __init__(self, host: str) -> None:
        self.host = host

    def kbdint_auth_requested(self) -> str | None:
        if not can_prompt():
            log.warning("%s asks for keyboard-interactive login (e.g. a one-time code) and nobody can answer: "
                        "run in a terminal, set SSH_ASKPASS (with SSH_ASKPASS_REQUIRE=force), or log in once "
                        "through an OpenSSH ControlMaster with \"transport\": \"openssh\" (docs/site-two-factor.md)",
                        self.host)
            return None
        return ""  # no particular submethods

    async def kbdint_challenge_received(self, name: str, instructions: str, lang: str,
                                        prompts: Sequence[tuple[str, bool]]) -> list[str] | None:
        del lang
        if not prompts:
            return []  # a message without a question
        header = "\n".join(text for text in (name, instructions) if text)
        answers = []
        for index, (prompt, echo) in enumerate(prompts):
            text = f"{header}\n{prompt}" if header and index == 0 else prompt
            answer = await anyio.to_thread.run_sync(ask, f"({self.host}) {text}", echo)
            if answer is None:
                return None
            answers.append(answer)
        return answers
