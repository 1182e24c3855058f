"""Who claimed a job: owner tags naming a process (host, pid, token, start time), and whether it lives.

The jobs database records the owner of each claim; a job claimed by a process that has died is
taken over, never waited on forever. Telling a live process from a dead one (or from a later one
that got the same pid) reads ``/proc``, which is no database work, so it lives here.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

__all__ = ["owner_alive", "process_owner", "release_owner"]


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/PID/stat`` (state first), or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(") ")[2].split()


def _start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat``: start time in clock ticks since boot."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) >= 20 else None


_live_tokens: set[str] = set()
"""Tokens of this process's owners still in use (a closed session's claims are abandoned)."""


def process_owner() -> str:
    """An owner tag for claims: host, pid, a random token, and the process's start time.

    The start time tells the claimer from a later process that got the same pid, so a job
    claimed by a process that has died is taken over, never waited on forever. Within this
    process, the token is live until :func:`release_owner`.
    """
    token = uuid.uuid4().hex[:8]
    _live_tokens.add(token)
    return f"{socket.gethostname()}:{os.getpid()}:{token}:{_start_time(os.getpid()) or ''}"


def release_owner(owner: str) -> None:
    """The owner (a session) is done: jobs it claimed and did not submit may be taken over."""
    _live_tokens.discard(owner.split(":")[2] if owner.count(":") >= 2 else "")


def owner_alive(owner: str | None) -> bool:
    """Whether the process that claimed a job may still be submitting it."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid, _, rest = rest.partition(":")
    started = rest.partition(":")[2]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host: cannot tell, assume alive (the remote submit lock still guards)
    if int(pid) == os.getpid():
        return rest.partition(":")[0] in _live_tokens
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(int(pid))
    if fields is None or fields[0] in ("Z", "X"):
        return False  # a zombie: it has exited, nobody reaped it yet
    return not (started and len(fields) >= 20 and fields[19] != started)  # else: the pid was recycled
