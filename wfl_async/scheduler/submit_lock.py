"""The exactly-once submit lock: shell text that submits a job directory at most once, whatever is lost.

Each job directory ``$d`` has a lock file (:data:`~wfl_async.jobs.layout.SUBMIT_LOCK`) and an answer
file (:data:`~wfl_async.jobs.layout.SUBMIT_ANSWER`). The batch submit command (a loop, or an array's
shell) runs this text for every directory; the driver reads the record it prints
(:class:`~wfl_async.scheduler.base.SubmitOutputReader`)::

    free ──(noclobber create; the lock names its holder: host, pid, start time)──> locked
    locked ──(submit program ran; exit status + output renamed into place)──────> answered
    locked, no answer, and then a later attempt finds:
        its holder alive (this host: same pid and start time; another host or no
        holder named: lock younger than IN_PROGRESS_MINUTES) ─> in progress (transient: ask again)
        otherwise ─────────────────────────────────────────────> unresolved
    unresolved ──(the driver found the job nowhere: queue, markers)──> released ──> free
    answered: every later attempt reuses the answer (a successful one is the job's id)

The lock is never removed by the command that took it: only :func:`release_locks_command`, which the
driver sends for jobs it looked for and did not find, releases one (once, even if repeated). Each
step is builtins plus one ``mv``: per job this costs what a plain submit loop costs, plus one fork.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Sequence

from ..jobs import layout

__all__ = ["IN_PROGRESS", "IN_PROGRESS_MINUTES", "KEEP_ANSWER", "PROC_START", "SET_HOLDER", "SET_HOST",
           "UNRESOLVED", "UNRESOLVED_RC", "lock_or_earlier_answer", "release_locks_command", "submit_once"]

UNRESOLVED = "@@wfl_async_unresolved@@"
"""Starts the record of a job whose earlier submission has no usable answer."""
UNRESOLVED_RC = 75
IN_PROGRESS = "another submission of this job is still running"
"""Starts the record of a job whose lock is held by a submission still running (a transient complaint)."""
IN_PROGRESS_MINUTES = 5
"""How long a lock without an answer counts as in progress when its holder cannot be checked: it
runs on another host (login nodes behind one name: a command repeated after a dropped connection
may land on another one), or the lock names no holder (written by an older version)."""

PROC_START = (
    '{ read -r s <"/proc/$p/stat"; } 2>/dev/null || s=""; s=${s##*) }; set -- $s; '
    'if [ "$#" -ge 20 ] && [ "$1" != Z ]; then s=${20}; else s=""; fi'
)
"""Shell (POSIX sh) leaving in ``$s`` the start time of process ``$p`` ("" if it is gone or a zombie).

Builtins only (the local scheduler's status command runs it for every job, and must not fork a
process per job). The start time (field 22 of ``/proc/PID/stat``, clock ticks since boot) tells a
recycled pid from the process that had it. The command name (field 2) may contain spaces and
parentheses, so the fields are cut after the last ``") "``; the fields after it start at field 3
(the state): field 22 is the 20th."""
SET_HOST = '{ read -r wfl_host </proc/sys/kernel/hostname; } 2>/dev/null || wfl_host=$(uname -n);'
"""Shell setting ``$wfl_host`` to this machine's name (builtins only on Linux; once per command)."""
SET_HOLDER = (f'{{ read -r s </proc/self/stat; }} 2>/dev/null || s=""; p=${{s%% *}}; {PROC_START}; '
              'wfl_me="$wfl_host $p $s";')
"""Shell setting ``$wfl_me`` to the process running it: ``<host> <pid> <start time>`` (builtins only)."""
_STAMP_LOCK = f'printf \'%s\\n\' "$wfl_me" > "$d/{layout.SUBMIT_LOCK}"'
"""Shell creating job directory ``$d``'s submit lock naming its holder; under ``set -C`` (noclobber:
O_EXCL) it fails where the lock exists, so only one submitter ever takes it."""
_LOCKED = "@@wfl_async_locked@@"
"""What the submitting subshell prints instead of submitting when the lock was taken before."""
_HOLDER_LIVES = (
    f'{{ wfl_lh=; p=; wfl_ls=; {{ read -r wfl_lh p wfl_ls <"$d/{layout.SUBMIT_LOCK}"; }} 2>/dev/null; '
    f'if [ -n "$p" ] && [ "$wfl_lh" = "$wfl_host" ]; then {PROC_START}; [ -n "$s" ] && [ "$s" = "$wfl_ls" ]; '
    f'else [ -n "$(find "$d/{layout.SUBMIT_LOCK}" -mmin -{IN_PROGRESS_MINUTES} 2>/dev/null)" ]; fi; }}'
)
"""Shell condition: the submission holding ``$d``'s lock may still be running. On this host: its
process lives (same pid and start time). On another host, or a lock naming no holder: the lock is
younger than :data:`IN_PROGRESS_MINUTES` (that host's processes cannot be seen from here)."""
KEEP_ANSWER = (f"printf '%s\\n%s\\n' \"$rc\" \"$out\" > \"$d/{layout.SUBMIT_ANSWER}.tmp\" && "
               f'mv -f "$d/{layout.SUBMIT_ANSWER}.tmp" "$d/{layout.SUBMIT_ANSWER}";')
"""Shell text keeping ``$rc`` and ``$out`` as the answer of job directory ``$d`` (renamed into place)."""
_EARLIER_ANSWER = (
    f'if [ "$(head -n 1 "$d/{layout.SUBMIT_ANSWER}" 2>/dev/null)" = 0 ]; then rc=0; '
    f'out=$(tail -n +2 "$d/{layout.SUBMIT_ANSWER}"); '
    f'elif [ ! -e "$d/{layout.SUBMIT_ANSWER}" ] && {_HOLDER_LIVES}; then rc=1; '
    f'out="{IN_PROGRESS} (its lock names ${{p:+process $p on }}${{wfl_lh:-no holder}}); waiting for it to answer"; '
    f'else rc={UNRESOLVED_RC}; out="{UNRESOLVED} $(tail -n +2 "$d/{layout.SUBMIT_ANSWER}" 2>/dev/null)"; fi;'
)
"""Shell text for a job directory locked by an earlier submission: reuse its answer (answered), report
it :data:`IN_PROGRESS` (its holder may still be running), or report it :data:`UNRESOLVED` (the driver
looks for the job); leaves ``$rc`` and ``$out`` for the record."""


def submit_once(invocation: str, record: str) -> str:
    """Shell text that submits job directory ``$d`` with ``invocation`` unless its lock was taken before.

    The lock is taken in the subshell that runs ``invocation`` (so it names that process) and the
    scheduler's answer is always kept; a directory locked earlier answers from its earlier answer.
    Either way ``record`` (shell text printing ``$rc`` and ``$out`` for job ``$i``) runs once.
    ``$wfl_host`` must be set (:data:`SET_HOST`).
    """
    return (f'out=$(set -C; {SET_HOLDER} if {{ {_STAMP_LOCK}; }} 2>/dev/null; then set +C; '
            f'cd "$d" && {invocation} </dev/null 2>&1; else printf %s {_LOCKED}; fi); rc=$?; '
            f'if [ "$out" = {_LOCKED} ]; then {_EARLIER_ANSWER} {record} else {KEEP_ANSWER} {record} fi;')


def lock_or_earlier_answer(taken: str, record: str) -> str:
    """Shell text that takes job directory ``$d``'s lock and runs ``taken``, or else prints its earlier
    answer with ``record``. For an array: its shell (``$wfl_me``: :data:`SET_HOLDER`) holds its tasks' locks."""
    return (f"set -C; if {{ {_STAMP_LOCK}; }} 2>/dev/null; then set +C; {taken} "
            f"else set +C; {_EARLIER_ANSWER} {record} fi;")


def release_locks_command(job_dirs: Sequence[str]) -> str:
    """Shell text removing the stale submit lock and answer of each of ``job_dirs``, once.

    The submit command is repeated after a dropped connection; a second run must not remove
    the lock its first run took (and maybe submitted under), so each removal leaves this
    command's token behind and is skipped where the token is found.
    """
    if not job_dirs:
        return ""
    token = uuid.uuid4().hex
    lock, answer, mark = (f'"$d/{name}"' for name in (layout.SUBMIT_LOCK, layout.SUBMIT_ANSWER,
                                                      layout.SUBMIT_RELEASED))
    dirs = " ".join(shlex.quote(d) for d in job_dirs)
    return (f'for d in {dirs}; do if [ "$(cat {mark} 2>/dev/null)" != {token} ]; then '
            f"rm -f -- {lock} {answer} && echo {token} > {mark} || exit 1; fi; done")
