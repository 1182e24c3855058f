"""Son of Grid Engine / Univa / Altair Grid Engine: ``qsub -terse``, ``qstat -xml``, ``qdel``."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from ..jobs.ended import EndCause, Ending
from ..jobs.states import QueueState
from .arrays import expand_indices
from .base import Accounted, JobScriptSpec, Scheduler

__all__ = ["SGEScheduler"]

logger = logging.getLogger(__name__)

# qstat(1) (SGE 8.1.9), OUTPUT FORMATS, the job's status is "a combination of d(eletion),
# E(rror), h(old), q(ueued), r(unning), R(estarted), s(uspended), S(uspended),
# t(ransfering), T(hreshold), w(aiting), or z(ombie)".  Decided letter by letter, first
# match wins:
#   E  "appears for pending jobs that couldn't be started due to job properties" (Eqw):
#      it stays in the queue forever, so it counts as FAILED.
#   z  "appears for finished jobs when the -s z option is used": FINISHED.
#   r, t  "indicate that a job is about to be executed or is already executing": RUNNING.
#      Before h: qhold on a running job gives "hr" (measured), and the job keeps running.
#   s, S, T  "show that an already running job has been suspended": RUNNING (it holds
#      its slots and resumes).
#   h  "a job currently is not eligible for execution due to a hold state assigned to it
#      via qhold(1), qalter(1) or the qsub(1) -h option, or [...] waiting for completion of
#      the jobs for which job dependencies have been assigned": HELD (hqw).
#   q, w  "Pending, unheld jobs are displayed as qw": QUEUED.
#   R  "the job was restarted": a modifier ("Rr", "Rq"), so it decides only alone.
#   d  "qdel(1) has been used to initiate job deletion": combined with one of the above
#      (dr, dqw, dt); alone it is still listed while being removed, so RUNNING.
_SGE_LETTERS: tuple[tuple[str, QueueState], ...] = (
    ("E", QueueState.FAILED),
    ("z", QueueState.FINISHED),
    ("r", QueueState.RUNNING),
    ("t", QueueState.RUNNING),
    ("s", QueueState.RUNNING),
    ("S", QueueState.RUNNING),
    ("T", QueueState.RUNNING),
    ("h", QueueState.HELD),
    ("q", QueueState.QUEUED),
    ("w", QueueState.QUEUED),
    ("R", QueueState.RUNNING),
    ("d", QueueState.RUNNING),
)

# One <job_list ...>...</job_list> element of `qstat -xml`; only the job number and the
# state are read from it, never the name.  qstat escapes the name (measured: "<" becomes
# "%lt;", "&" "&amp;", quotes &apos;/&quot;), so a name cannot close the element early.
_JOB_LIST = re.compile(r"<job_list\b[^>]*>(.*?)</job_list>", re.S)
_JOB_NUMBER = re.compile(r"<JB_job_number>\s*(\d+)\s*</JB_job_number>")
_STATE = re.compile(r"<state>\s*([A-Za-z]+)\s*</state>")
_TASKS = re.compile(r"<tasks>\s*([0-9,:-]+)\s*</tasks>")
"""The tasks of an array an element stands for: ``3`` (a running task), ``1-10:1``, ``1,5`` (pending)."""
_QACCT_FIELD = re.compile(r"^(jobnumber|taskid|failed|exit_status|category|ru_wallclock|maxvmem)\s+(.*?)\s*$", re.M)
_REQUEST = re.compile(r"\b(h_rt|h_vmem)=([^,\s]+)")
_MEMORY_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_FAILED_BEFORE_START = range(1, 28)
"""``failed`` codes of qacct(5) for a job its execd could not set up or start (1-27): its host's fault."""
_TERSE_ID = re.compile(r"(?:^|\s)(\d+)(?:\.\S*)?\s*$")


def _seconds(text: str) -> int | None:
    """SGE's time: seconds, or ``H:M:S``."""
    try:
        parts = [int(float(p or 0)) for p in text.split(":")]
    except ValueError:
        return None
    total = 0
    for part in parts:
        total = total * 60 + part
    return total


def _bytes(text: str) -> float | None:
    """SGE's memory (``500M``, ``4.781MB``, ``1G``) in bytes."""
    match = re.fullmatch(r"([0-9.]+)\s*([bkmgt]?)b?", text.strip().lower())
    return float(match[1]) * _MEMORY_UNITS[match[2]] if match else None


def qacct_ending(fields: dict[str, str]) -> tuple[QueueState, Ending | None]:
    """How one ``qacct -j`` record ended: the state and (if not a clean end) the cause.

    ``failed 37`` is qmaster enforcing ``h_rt``/``h_vmem``; a job killed by a signal (``exit_status``
    above 128, ``failed 100``) past its ``h_rt`` ran out of time, at its ``h_vmem`` ran out of memory,
    else was deleted (qdel kills with SIGKILL).
    """
    failed = int((fields.get("failed", "0").split() or ["0"])[0] or 0)
    exit_status = int((fields.get("exit_status", "0").split() or ["0"])[0] or 0)
    requests = dict(_REQUEST.findall(fields.get("category", "")))
    limit = _seconds(requests["h_rt"]) if "h_rt" in requests else None
    wall = _seconds(fields.get("ru_wallclock", "").rstrip("s")) or 0
    memory_limit = _bytes(requests.get("h_vmem", ""))
    peak = _bytes(fields.get("maxvmem", "")) or 0.0
    named = f"SGE failed {failed}, exit status {exit_status}"
    if failed in _FAILED_BEFORE_START:
        return QueueState.FAILED, Ending(EndCause.NODE_FAIL, f"SGE failed {failed}: not started on its host")
    if failed == 0 and exit_status == 0:
        return QueueState.FINISHED, None
    if failed == 37 or exit_status > 128:
        if memory_limit and peak >= 0.95 * memory_limit:
            return QueueState.FAILED, Ending(EndCause.OUT_OF_MEMORY, named, memory=requests["h_vmem"])
        if limit is not None and (failed == 37 or wall >= limit):
            return QueueState.TIMEOUT, Ending(EndCause.TIMEOUT, named, time_limit=limit)
        if failed != 37:
            return QueueState.FAILED, Ending(EndCause.CANCELLED, f"{named}: killed, assumedly by qdel")
    return QueueState.FAILED, Ending(EndCause.FAILED, named)


def sge_state(code: str) -> QueueState | None:
    """Our state for an SGE state code such as ``qw``, ``hqw``, ``dr`` or ``Eqw``; None if unknown."""
    if not code or any(c not in "dEhqrRsStTwz" for c in code):
        return None
    for letter, state in _SGE_LETTERS:
        if letter in code:
            return state
    return None


class SGEScheduler(Scheduler):
    """Grid Engine, as ExPyRe's ``sge`` scheduler drives it."""

    name = "sge"
    script_name = "job.script.sge"
    # -terse prints the bare job id ("123", or "123.1-10:1" for an array) instead of
    # 'Your job 123 ("name") has been submitted', which quotes the job name.
    submit_program = "qsub -terse"
    cancel_program = "qdel"
    hold_program = "qhold"
    release_program = "qrls"
    env_prefix = "SGE"
    array_option = "-t "
    array_index_variable = "$SGE_TASK_ID"
    first_array_index = 1
    # Texts of qsub/qstat (SGE 8.1.9 commlib and gdi messages)
    transient_errors = (r"unable to contact qmaster", r"failed receiving gdi request", r"got send error",
                        r"commlib error", r"unable to send message to qmaster", r"can't unpack gdi request")
    limit_errors = (r"job rejected: Only \d+ jobs are allowed per user", r"exceeds? the maximum number of jobs",
                    r"max_u_jobs")

    def default_header(self) -> list[str]:
        # N_ because SGE job names must not start with a digit; -cwd so that the job runs
        # (and its -o/-e files land) in the job directory it was submitted from.
        return [
            "#$ -N N_{id}",
            "#$ -l h_rt={max_time}",
            "#$ -o job.{id}.stdout",
            "#$ -e job.{id}.stderr",
            "#$ -S /bin/bash",
            "#$ -r n",
            "#$ -cwd",
        ]

    def memory_directive(self, spec: JobScriptSpec) -> str:
        # h_vmem is per slot, and execd enforces it (a process's address space: ulimit -v)
        return f"#$ -l h_vmem={-(-int(spec.mem_kb or 0) // (1024 * max(1, spec.num_cores)))}M"

    def cores_per_node_commands(self, spec: JobScriptSpec) -> list[str]:
        # NSLOTS: slots granted (parallel environment), NHOSTS: hosts; ExPyRe divides them.
        return [
            'if [ -n "${NSLOTS:-}" ] && [ -n "${NHOSTS:-}" ]; then',
            "    export EXPYRE_NUM_CORES_PER_NODE=$(( NSLOTS / NHOSTS ))",
            "else",
            f"    export EXPYRE_NUM_CORES_PER_NODE={int(spec.num_cores_per_node)}",
            "fi",
        ]

    def parse_submitted_id(self, output: str) -> str | None:
        # The id is the last word: warnings qsub prints first are folded into the same text.
        m = _TERSE_ID.search(output)
        return m.group(1) if m else None

    def find_command(self) -> str:
        # `qstat -j '*'` prints a block per job of the user, with "job_number:" and "cwd:"
        # (-cwd: the job directory it was submitted from). It complains (exit 1) when the user
        # has no job at all, so the plain listing runs first: it fails only if qmaster does not
        # answer (then the lookup fails and is retried), and with no job there is nothing to find.
        user = '"$(id -un)"'
        return self.with_array_tasks(
            f"qstat -u {user} >/dev/null && {{ qstat -u {user} -j '*' 2>/dev/null | "
            "awk '/^job_number:/ {id = $2} /^cwd:/ {sub(/^cwd:[[:space:]]+/, \"\"); print id \" \" $0}'; true; }")

    def array_task_id(self, array_id: str, index: int) -> str:
        # qdel, qhold and qrls take "job.task" (sge_types(1), job_task_list)
        return f"{array_id}.{index}"

    def array_parent_id(self, remote_id: str) -> str | None:
        head, sep, index = remote_id.partition(".")
        return head if sep and index.isdigit() else None

    def accounting_command(self, remote_ids: Sequence[str]) -> str:
        # qacct takes one job (and task) at a time: one loop, in one command; a job not accounted
        # yet (qacct lags up to flush_finish_sec) prints nothing and is asked again next poll
        asks = []
        for remote_id in remote_ids:
            number, _, task = remote_id.partition(".")
            if number.isdigit() and (not task or task.isdigit()):
                asks.append(f"qacct -j {number}" + (f" -t {task}" if task else ""))
        return "; ".join(f"{ask} 2>/dev/null" for ask in asks) + "; true" if asks else "true"

    def parse_accounting_output(self, stdout: str) -> dict[str, Accounted]:
        found: dict[str, Accounted] = {}
        for block in stdout.split("=" * 62):
            fields = dict(_QACCT_FIELD.findall(block))
            number = fields.get("jobnumber", "")
            if not number.isdigit():
                continue
            task = fields.get("taskid", "undefined")
            remote_id = self.array_task_id(number, int(task)) if task.isdigit() else number
            state, ending = qacct_ending(fields)
            found[remote_id] = Accounted(state, fields.get("exit_status", "").split()[0] if fields.get("exit_status")
                                         else "", "", ending)
        return found

    def status_command(self) -> str:
        # Every job of the user in one call.  -xml because the plain table pads the name
        # to 10 columns and has optional columns (queue, ja-task-ID), so its state column
        # has no fixed position; the XML has one element per job with the state by name.
        # "$(id -un)": $USER is not set in every non-interactive ssh session.
        return 'qstat -xml -u "$(id -un)"'

    def parse_status_output(self, stdout: str) -> dict[str, QueueState]:
        states: dict[str, QueueState] = {}
        for block in _JOB_LIST.findall(stdout):
            number = _JOB_NUMBER.search(block)
            if number is None:
                continue
            job_id = number.group(1)
            code_match = _STATE.search(block)
            code = code_match.group(1) if code_match else ""
            mapped = sge_state(code)
            if mapped is None:
                logger.warning("qstat reports job %s in state %r, which wfl_async does not know; "
                               "treating it as still active", job_id, code)
                mapped = QueueState.UNKNOWN
            tasks = _TASKS.search(block)
            if tasks is not None:  # one element per running task, one for the pending ones
                states.update((self.array_task_id(job_id, i), mapped) for i in expand_indices(tasks.group(1)))
            elif states.get(job_id) is not QueueState.RUNNING:
                states[job_id] = mapped
        return states
