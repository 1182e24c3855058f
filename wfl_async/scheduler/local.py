"""The built-in ``local`` scheduler: job scripts as detached background processes.

There is no queueing system; a small runner (bash, text below) stands in for one:

- submitting starts ``setsid nohup bash -c RUNNER`` in the job directory with stdin, stdout
  and stderr redirected, so the job survives the ssh channel (and the submitting shell)
  closing, and prints the job's id at once;
- the runner registers itself in ``<slot dir>/jobs/<id>`` (first line ``queued``), waits for
  one of ``max_jobs`` slots (default: ``nproc`` of the machine) by taking an exclusive
  ``flock`` on ``<slot dir>/slot.<i>``, rewrites the file to ``running``, runs the job
  script, and removes the file when it ends; the kernel drops the lock with the process,
  so a killed job never leaks its slot;
- the id is ``PID.STARTTIME`` (STARTTIME: field 22 of ``/proc/PID/stat``, clock ticks
  since boot), so a recycled pid is never mistaken for the job;
- the status command lists the registered jobs whose process is still alive with that
  start time (and deletes entries of processes that are gone, e.g. after ``kill -9``);
- the runner enforces the job's ``max_time`` (coreutils ``timeout``: TERM at the limit to the
  job's process group, KILL ``KILL_AFTER_SECONDS`` later); a job killed so stays listed as
  ``timeout`` for ``TIMEOUT_LISTED_SECONDS``, so it is reported died at its time limit, as a
  scheduler's TIMEOUT is;
- cancelling sends SIGTERM to the job's process group (the runner is a session leader), which
  the runner passes on to the job.

Several workflows (and several rundirs) of one user share the slot dir, so together they
never run more than ``max_jobs`` jobs at once.  Hold and release are not supported.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Sequence

from ..errors import SchedulerError
from ..jobs.states import QueueState
from .base import JobScriptSpec, Scheduler
from .submit_lock import PROC_START

__all__ = ["LocalScheduler", "DEFAULT_SLOT_DIR_ENV"]

logger = logging.getLogger(__name__)

DEFAULT_SLOT_DIR_ENV = "WFL_ASYNC_LOCAL_SLOTS"
"""Variable (read on the machine that runs the jobs) naming the slot dir when none is configured."""

_ID = re.compile(r"\d+\.\d+")

LIMIT_LINE = "# wfl_async local time limit (s): "
"""Starts the second line of a local job script, followed by the job's ``max_time`` in seconds."""
KILL_AFTER_SECONDS = 10
"""A job still running this long after the TERM at its time limit is killed (KILL)."""
TIMEOUT_LISTED_SECONDS = 600
"""How long a job killed at its time limit is listed as ``timeout`` (beyond any ``died_grace_seconds``)."""

# The runner: $1 slot dir, $2 max jobs (empty: nproc), $3 job script (in the cwd).
_RUNNER = r"""
slots=$1; max=$2; script=$3
p=$$; __PROC_START__
id=$$.$s
job=$slots/jobs/$id
trap 'rm -f -- "$job" "$job.tmp"' EXIT
trap 'exit 143' TERM INT
state() { printf '%s\n%s\n' "$1" "$PWD" >"$job.tmp" && mv -f -- "$job.tmp" "$job"; }
state queued
case $max in ''|*[!0-9]*|0) max=$(nproc 2>/dev/null || echo 1) ;; esac
# One waiter at a time scans the slots, in arrival order; the others block here.
exec 8>>"$slots/queue.lock"
flock 8
k=0
while :; do
    i=0
    while [ "$i" -lt "$max" ]; do
        exec 9>>"$slots/slot.$i"
        flock -n 9 && break
        exec 9>&-
        i=$((i + 1))
    done
    [ "$i" -lt "$max" ] && break
    # All busy: wait (at most 1 s) for one of them, then scan again.
    exec 9>>"$slots/slot.$k"
    flock -w 1 9 && break
    exec 9>&-
    k=$(((k + 1) % max))
done
exec 8>&-
# The time limit (s) is the script's second line (LocalScheduler.render_script). `timeout` runs
# the script in a process group of its own and signals all of it: TERM at the limit, KILL a grace
# later; a cancel (TERM to the runner's group) is passed on to it.
limit=; { read -r _ && read -r hdr; } <"./$script" 2>/dev/null
case $hdr in "__LIMIT_LINE__"*) limit=${hdr#"__LIMIT_LINE__"} ;; esac
case $limit in *[!0-9]*) limit= ;; esac
command -v timeout >/dev/null 2>&1 || limit=
state running
if [ -n "$limit" ] && [ "$limit" -gt 0 ]; then
    started=$SECONDS
    timeout -k __KILL_AFTER__ "$limit" "./$script" 9>&- >job.local.stdout 2>job.local.stderr &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null; exit 143' TERM INT
    wait "$child"
    rc=$?
    if { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && [ $((SECONDS - started)) -ge "$limit" ]; then
        # kept (listed as "timeout" by the status command for a while), so the job is reported
        # killed at its time limit, as a scheduler's TIMEOUT is
        printf 'timeout\n%s\n%s\n' "$PWD" "$(date +%s)" >"$job.tmp" && mv -f -- "$job.tmp" "$job" && trap - EXIT
    fi
else
    "./$script" 9>&- >job.local.stdout 2>job.local.stderr
    rc=$?
fi
printf '%s\n' "$rc" >job.local.exit
exit "$rc"
""".replace("__PROC_START__", PROC_START).replace("__LIMIT_LINE__", LIMIT_LINE).replace(
    "__KILL_AFTER__", str(KILL_AFTER_SECONDS))


class LocalScheduler(Scheduler):
    """Runs job scripts on the machine itself, at most ``max_jobs`` at a time.

    :param slot_dir: directory of the slot lock files and the job registry, shared by
        every workflow of the user on that machine; a leading ``~/`` means the home
        directory there.  Default: ``$WFL_ASYNC_LOCAL_SLOTS`` on that machine, else
        ``$HOME/.wfl_async_slots``.
    :param max_jobs: how many jobs run at once; default the machine's core count (``nproc``).
    """

    name = "local"
    listing_by_line = True
    script_name = "job.script.local"
    submit_program = "setsid nohup /bin/bash -c"
    cancel_program = "kill -TERM"
    hold_program = ""
    release_program = ""
    env_prefix = "WFL_ASYNC_LOCAL_JOB"

    def __init__(self, slot_dir: str | None = None, max_jobs: int | None = None) -> None:
        if max_jobs is not None and (not isinstance(max_jobs, int) or max_jobs < 1):
            raise SchedulerError(f"max_jobs of the local scheduler must be a positive integer, not {max_jobs!r}")
        self.slot_dir = slot_dir
        self.max_jobs = max_jobs

    def __repr__(self) -> str:
        return f"LocalScheduler(slot_dir={self.slot_dir!r}, max_jobs={self.max_jobs!r})"

    def _slot_dir_shell(self) -> str:
        """Shell words for the slot dir, expanded on the machine that runs the jobs."""
        if self.slot_dir is None:
            return f'"${{{DEFAULT_SLOT_DIR_ENV}:-$HOME/.wfl_async_slots}}"'
        if self.slot_dir.startswith("~/"):
            return '"$HOME"/' + shlex.quote(self.slot_dir[2:])
        return shlex.quote(self.slot_dir)

    # ---------------------------------------------------------------- job script
    def default_header(self) -> list[str]:
        return []

    def render_script(self, spec: JobScriptSpec) -> str:
        """The script, its time limit on the second line, where the runner reads it (always there,
        whatever the header: the runner enforces ``max_time`` as a scheduler would)."""
        shebang, _, rest = super().render_script(spec).partition("\n")
        return f"{shebang}\n{LIMIT_LINE}{int(spec.max_time)}\n{rest}"

    def cores_per_node_commands(self, spec: JobScriptSpec) -> list[str]:
        return [f"export EXPYRE_NUM_CORES_PER_NODE={int(spec.num_cores_per_node)}"]

    # ---------------------------------------------------------------- submit
    def submit_invocation(self) -> str:
        # One brace group, so submit_command's redirections apply to all of it.  The runner
        # gets its own stdin/stdout/stderr: `$(...)` in submit_command returns as soon as the
        # printf below is done, not when the job ends.  A background command of a
        # non-interactive shell is not a process group leader, so setsid does not fork and
        # $! is the runner's pid.  If the runner has already ended (and been reaped), its
        # start time reads as 0: a job that is gone, which is what the status will say.
        script = shlex.quote(self.script_name)
        max_jobs = "" if self.max_jobs is None else str(int(self.max_jobs))
        return (
            f"{{ slots={self._slot_dir_shell()}; "
            f'mkdir -p -- "$slots/jobs" && chmod u+x {script} && {{ '
            f"{self.submit_program} {shlex.quote(_RUNNER)} wfl-async-local "
            f'"$slots" {shlex.quote(max_jobs)} {script} </dev/null >wfl_async_local.log 2>&1 & '
            f"p=$!; {PROC_START}; id=$p.${{s:-0}}; "
            # register the job now unless its runner already has (noclobber), so the status and
            # find commands list it at once; the runner's own writes replace this entry
            f'if [ -n "$s" ]; then set -C; printf \'queued\\n%s\\n\' "$PWD" 2>/dev/null >"$slots/jobs/$id"; '
            f"set +C; fi; printf '%s\\n' \"$id\"; }}; }}"
        )

    def parse_submitted_id(self, output: str) -> str | None:
        words = output.split()
        if words and _ID.fullmatch(words[-1]):
            return words[-1]
        return None

    # ---------------------------------------------------------------- status
    def _for_each_live_job(self, live: str, gone: str = "") -> str:
        """Shell running ``live`` for each registered job whose process is alive ($f, $id set)."""
        return (
            f"slots={self._slot_dir_shell()}; "
            'for f in "$slots"/jobs/*; do '
            '[ -f "$f" ] || continue; id=${f##*/}; '
            'case $id in *.tmp) continue ;; esac; '
            f"p=${{id%%.*}}; {PROC_START}; "
            f'if [ -n "$s" ] && [ "$id" = "$p.$s" ]; then {live}; '
            f"{f'else {gone}; ' if gone else ''}fi; "
            "done; true"
        )

    def find_command(self) -> str:
        # The runner registers itself with its working directory (second line of its file).
        return self._for_each_live_job(
            "{ read -r st && read -r dir; } <\"$f\" 2>/dev/null && printf '%s %s\\n' \"$id\" \"$dir\"")

    def status_command(self) -> str:
        # One line "ID<TAB>queued|running" per live job; stale entries are removed. The file
        # vanishes when the job ends: then it is simply not listed. A job killed at its time
        # limit left its entry "timeout" (third line: when): listed so for TIMEOUT_LISTED_SECONDS
        # (`date` runs only if there is such an entry), then removed.
        gone = ('{ read -r st && read -r dir && read -r at; } <"$f" 2>/dev/null; '
                'case $at in ""|*[!0-9]*) at=0 ;; esac; '
                'if [ "$st" = timeout ] && { [ -n "$now" ] || now=$(date +%s); } && '
                f'[ $((now - at)) -lt {TIMEOUT_LISTED_SECONDS} ]; then printf \'%s\\ttimeout\\n\' "$id"; '
                'else rm -f -- "$f"; fi')
        return "now=; " + self._for_each_live_job(
            "read -r st <\"$f\" 2>/dev/null || continue; printf '%s\\t%s\\n' \"$id\" \"$st\"", gone=gone)

    def parse_status_output(self, stdout: str) -> dict[str, QueueState]:
        states: dict[str, QueueState] = {}
        for line in stdout.splitlines():
            parts = line.strip().split("\t")
            if len(parts) != 2 or not _ID.fullmatch(parts[0]):
                continue
            job_id, word = parts
            if word == "queued":
                states[job_id] = QueueState.QUEUED
            elif word == "running":
                states[job_id] = QueueState.RUNNING
            elif word == "timeout":
                states[job_id] = QueueState.TIMEOUT
            else:
                logger.warning("local job %s is in state %r, which wfl_async does not know; "
                               "treating it as still active", job_id, word)
                states[job_id] = QueueState.UNKNOWN
        return states

    # ---------------------------------------------------------------- control
    def cancel_command(self, remote_ids: Sequence[str]) -> str:
        # SIGTERM to the process group of each job whose pid still has the recorded start
        # time; a recycled pid (or a job already gone) is left alone.
        for rid in remote_ids:
            if not _ID.fullmatch(rid):
                raise SchedulerError(f"refusing to cancel odd local job id {rid!r} (expected PID.STARTTIME)")
        ids = " ".join(remote_ids)
        return (
            f"for id in {ids}; do p=${{id%%.*}}; {PROC_START}; "
            f'if [ -n "$s" ] && [ "$id" = "$p.$s" ]; then {self.cancel_program} "-$p"; fi; '
            "done; true"
        )

    def hold_command(self, remote_ids: Sequence[str]) -> str:
        raise SchedulerError("hold is not supported by the local scheduler")

    def release_command(self, remote_ids: Sequence[str]) -> str:
        raise SchedulerError("release is not supported by the local scheduler")
