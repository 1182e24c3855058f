"""Which failures waiting cannot cure: a command's complaint or an ``OSError`` read as permanent.

A full disk, an exceeded quota, a read-only filesystem, a denied permission, a missing command
or too many open files stay so until the user acts; retrying them only hides them (a full
remote disk once made a run retry its uploads without end, silently). Every caller that
decides whether to retry asks :func:`permanent_cause` first and, when it answers, stops the
affected jobs at once with :func:`permanent_error` (the system, the path, the cause and the
fix); anything else is transient and retried with a bounded backoff.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from .errors import PermanentFailureError, RemoteCommandError

__all__ = ["PermanentCause", "permanent_cause", "permanent_error"]

_MAKE_ROOM = {False: "remove the directories of finished jobs ('wfl-async clean --remote'), or give the system "
                     "another 'rundir' in config.json",
              True: "remove the stage files of finished jobs ('wfl-async clean'), or set another "
                    "'local_stage_dir' in config.json"}
"""How to make room on a system's run directory, and (True) on this machine's stage directory."""


@dataclass(frozen=True)
class PermanentCause:
    """What a failure means, and what the user can do about it (:meth:`fix_for` fills in where)."""

    cause: str
    fix: str
    full: bool = False
    """The disk or quota is full: freeing space fixes it (not only another directory)."""

    def fix_for(self, path: str, *, local: bool = False) -> str:
        """The fix for a failure under ``path`` (``local``: this machine's stage directory)."""
        return self.fix.format(path=path, make_room=_MAKE_ROOM[local])


_RULES: tuple[tuple[str, frozenset[int], PermanentCause], ...] = (
    (r"No space left on device|database or disk is full", frozenset({errno.ENOSPC}),
     PermanentCause("no space left on device (disk or inodes full)",
                    "free space there (df -h {path}; df -i {path} shows inodes), {make_room}", full=True)),
    (r"Disk quota exceeded|quota exceeded", frozenset({errno.EDQUOT}),
     PermanentCause("disk quota exceeded", "free space within your quota (quota -s), {make_room}", full=True)),
    (r"Read-only file system", frozenset({errno.EROFS}),
     PermanentCause("read-only file system",
                    "give the system a writable 'rundir' in config.json (or ask the administrators why "
                    "{path} was mounted read-only)")),
    (r"Too many open files|Too many links", frozenset({errno.EMFILE, errno.ENFILE, errno.EMLINK}),
     PermanentCause("too many open files or links",
                    "raise the limit (ulimit -n) or lower the jobs in flight (max_queued_jobs)")),
    (r"Permission denied|Operation not permitted", frozenset({errno.EACCES, errno.EPERM}),
     PermanentCause("permission denied", "make {path} writable by this user (ls -ld {path}) or give the system "
                    "another 'rundir' in config.json")),
    (r"command not found|sh: \d+: \S+: not found", frozenset(), PermanentCause("a command is missing", "install it there, or put it on PATH in the system's "
                                 "'commands'/'pre_submit_cmds' in config.json ('wfl-async doctor' checks this)")),
)


def permanent_cause(failure: BaseException | str) -> PermanentCause | None:
    """The permanent cause of ``failure`` (an exception or a command's output), or None if retrying may help.

    A :class:`RemoteCommandError` is read from its stderr (and exit status 127, a missing
    command); an ``OSError`` from its errno; a string (a scheduler's complaint) by its text.
    """
    if isinstance(failure, RemoteCommandError):
        text = failure.stderr.decode(errors="replace")
        if failure.returncode == 127:
            return _RULES[-1][2]
    elif isinstance(failure, OSError) and failure.errno is not None:
        for _, errnos, cause in _RULES:
            if failure.errno in errnos:
                return cause
        return None
    else:
        text = str(failure)
    for pattern, _, cause in _RULES:
        if re.search(pattern, text, re.IGNORECASE):
            return cause
    return None


def permanent_error(cause: PermanentCause, *, system: str, path: str, doing: str, detail: str,
                    consequence: str) -> PermanentFailureError:
    """The error that stops the jobs a permanent failure hit: where, what, why, what was left, what to do.

    :param doing: what failed, e.g. ``"staging 24 job(s)"``
    :param detail: the failing command's own last words (its stderr tail)
    :param consequence: what this means for the jobs and their files
    """
    last = " | ".join(line.strip() for line in detail.strip().splitlines()[-3:] if line.strip())[-400:]
    return PermanentFailureError(
        f"{system}: {doing} under {path} failed: {cause.cause}" + (f" ({last})" if last else "") +
        f". {consequence} Fix: {cause.fix_for(path, local=system == 'local')}; then rerun (finished and queued jobs are "
        f"re-attached, none is submitted twice).", system=system, path=path, cause=cause.cause)
