"""Slurm: ``sbatch``, ``squeue``, ``scancel``, ``scontrol hold/release``."""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Sequence

from ..jobs.ended import EndCause, Ending
from ..jobs.states import ACTIVE_STATES, QueueState
from .arrays import expand_indices
from .base import Accounted, JobScriptSpec, Scheduler

__all__ = ["SlurmScheduler"]

logger = logging.getLogger(__name__)

# squeue(1), "JOB STATE CODES" (Slurm 22.05), with the state each one means to us.
# FINISHED/FAILED records stay listed only until MinJobAge; the job's marker decides success.
_SLURM_STATES: dict[str, QueueState] = {
    # BF BOOT_FAIL: Job terminated due to launch failure, typically due to a hardware
    #    failure (e.g. unable to boot the node or block and the job can not be requeued).
    "BOOT_FAIL": QueueState.FAILED,
    # CA CANCELLED: Job was explicitly cancelled by the user or system administrator.
    #    The job may or may not have been initiated.
    "CANCELLED": QueueState.FAILED,
    # CD COMPLETED: Job has terminated all processes on all nodes with an exit code of zero.
    "COMPLETED": QueueState.FINISHED,
    # CF CONFIGURING: Job has been allocated resources, but are waiting for them to become
    #    ready for use (e.g. booting).  The script has not started yet.
    "CONFIGURING": QueueState.QUEUED,
    # CG COMPLETING: Job is in the process of completing. Some processes on some nodes may
    #    still be active.
    "COMPLETING": QueueState.RUNNING,
    # DL DEADLINE: Job terminated on deadline.
    "DEADLINE": QueueState.FAILED,
    # F FAILED: Job terminated with non-zero exit code or other failure condition.
    "FAILED": QueueState.FAILED,
    # NF NODE_FAIL: Job terminated due to failure of one or more allocated nodes.
    "NODE_FAIL": QueueState.FAILED,
    # OOM OUT_OF_MEMORY: Job experienced out of memory error.
    "OUT_OF_MEMORY": QueueState.FAILED,
    # PD PENDING: Job is awaiting resource allocation.  (HELD when the reason says so, below.)
    "PENDING": QueueState.QUEUED,
    # PR PREEMPTED: Job terminated due to preemption.
    "PREEMPTED": QueueState.FAILED,
    # R RUNNING: Job currently has an allocation.
    "RUNNING": QueueState.RUNNING,
    # RD RESV_DEL_HOLD: Job is being held after requested reservation was deleted.
    "RESV_DEL_HOLD": QueueState.HELD,
    # RF REQUEUE_FED: Job is being requeued by a federation.
    "REQUEUE_FED": QueueState.QUEUED,
    # RH REQUEUE_HOLD: Held job is being requeued.
    "REQUEUE_HOLD": QueueState.HELD,
    # RQ REQUEUED: Completing job is being requeued.
    "REQUEUED": QueueState.QUEUED,
    # RS RESIZING: Job is about to change size.
    "RESIZING": QueueState.RUNNING,
    # RV REVOKED: Sibling was removed from cluster due to other cluster starting the job.
    #    The job lives on in another cluster of the federation: neither done nor failed.
    "REVOKED": QueueState.UNKNOWN,
    # SI SIGNALING: Job is being signaled.
    "SIGNALING": QueueState.RUNNING,
    # SE SPECIAL_EXIT: The job was requeued in a special state. This state can be set by
    #    users, typically in EpilogSlurmctld, if the job has terminated with a particular
    #    exit value.
    "SPECIAL_EXIT": QueueState.FAILED,
    # SO STAGE_OUT: Job is staging out files.
    "STAGE_OUT": QueueState.RUNNING,
    # ST STOPPED: Job has an allocation, but execution has been stopped with SIGSTOP
    #    signal. CPUS have been retained by this job.
    "STOPPED": QueueState.RUNNING,
    # S SUSPENDED: Job has an allocation, but execution has been suspended and CPUs have
    #    been released for other jobs.
    "SUSPENDED": QueueState.RUNNING,
    # TO TIMEOUT: Job terminated upon reaching its time limit.
    "TIMEOUT": QueueState.TIMEOUT,
}

# Why a job ended, by its final state (sacct(1), "JOB STATE CODES"); FAILED and the rest: its exit
_CAUSES: dict[str, EndCause] = {
    "TIMEOUT": EndCause.TIMEOUT, "DEADLINE": EndCause.TIMEOUT, "OUT_OF_MEMORY": EndCause.OUT_OF_MEMORY,
    "NODE_FAIL": EndCause.NODE_FAIL, "BOOT_FAIL": EndCause.NODE_FAIL, "CANCELLED": EndCause.CANCELLED,
    "PREEMPTED": EndCause.PREEMPTED, "FAILED": EndCause.FAILED, "SPECIAL_EXIT": EndCause.FAILED,
}


def _time_limit(text: str) -> int | None:
    """Seconds of sacct's Timelimit: ``[D-]HH:MM:SS`` or ``MM:SS`` (slurmdbd), bare minutes (the
    job completion log), None for ``UNLIMITED``/``Partition_Limit``/empty."""
    text = text.strip()
    days, _, clock = text.rpartition("-") if "-" in text else ("0", "", text)
    try:
        parts = [int(p) for p in clock.split(":")]
        whole_days = int(days)
    except ValueError:
        return None
    if len(parts) == 1:
        return whole_days * 86400 + parts[0] * 60
    while len(parts) < 3:
        parts.insert(0, 0)
    return whole_days * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


# Reasons (squeue %r) of a PENDING job that mean "held": scontrol hold (JobHeldUser),
# an admin hold or `scontrol hold` by root (JobHeldAdmin).
_HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})

_SEP = "|"
_SUBMITTED = re.compile(r"Submitted batch job (\d+)")
_PENDING_TASKS = re.compile(r"^(\d+)_(\[[^\]]*\])$")
"""A line for the pending tasks of an array, ``123_[5-10]`` (when squeue is not given ``-r``)."""


def _tasks_per_node_lines(env: str, fallback: int) -> list[str]:
    # SLURM_TASKS_PER_NODE looks like "4", "4(x2)" or "4(x2),3": ExPyRe takes the first count.
    return [
        f'if [ -n "${{{env}:-}}" ]; then',
        f'    export EXPYRE_NUM_CORES_PER_NODE="${{{env}%%[(,]*}}"',
        "else",
        f"    export EXPYRE_NUM_CORES_PER_NODE={int(fallback)}",
        "fi",
    ]


class SlurmScheduler(Scheduler):
    """Slurm, as ExPyRe's ``slurm`` scheduler drives it."""

    name = "slurm"
    listing_by_line = True
    script_name = "job.script.slurm"
    # Plain sbatch: its "Submitted batch job N" line cannot be mistaken for anything else,
    # even after submit_command folds warnings (e.g. "can not load PMIx") into the same text.
    # `--parsable` prints a bare "N" or "N;cluster", which needs the line structure we fold away.
    submit_program = "sbatch"
    cancel_program = "scancel"
    hold_program = "scontrol hold"
    release_program = "scontrol release"
    env_prefix = "SLURM"
    array_option = "--array="
    array_index_variable = "$SLURM_ARRAY_TASK_ID"
    # Texts of sbatch/squeue (Slurm 22.05 src/common/slurm_errno.c and the clients' messages)
    transient_errors = (r"Socket timed out on send/recv operation", r"slurmctld not responding",
                        r"Unable to contact slurm controller", r"Slurm temporarily unable to accept job",
                        r"Zero Bytes were transmitted or received", r"Communication connection failure",
                        r"Slurm backup controller in standby mode")
    limit_errors = (r"QOSMaxSubmitJobPerUserLimit", r"AssocMaxSubmitJobLimit", r"MaxSubmitJobs?(PerUser)?Limit",
                    r"Job violates accounting/QOS policy \(job submit limit")

    def default_header(self) -> list[str]:
        return [
            "#SBATCH --job-name={id}",
            "#SBATCH --time={max_time}",
            "#SBATCH --output=job.{id}.stdout",
            "#SBATCH --error=job.{id}.stderr",
        ]

    def memory_directive(self, spec: JobScriptSpec) -> str:
        # per node (a job of one node: all of it); Slurm counts M as MiB
        return f"#SBATCH --mem={-(-int(spec.mem_kb or 0) // (1024 * max(1, spec.num_nodes)))}M"

    def cores_per_node_commands(self, spec: JobScriptSpec) -> list[str]:
        return _tasks_per_node_lines("SLURM_TASKS_PER_NODE", spec.num_cores_per_node)

    def parse_submitted_id(self, output: str) -> str | None:
        found = _SUBMITTED.findall(output)
        return found[-1] if found else None

    def find_command(self) -> str:
        # %Z: the job's working directory; jobs are submitted from inside their job directory
        # (no -r: an array's pending tasks are one line, its tasks come from its task list)
        return self.with_array_tasks("squeue --noheader --user=\"$(id -un)\" --format='%i %Z'")

    def status_command(self) -> str:
        # Every job of the user, in one call, with the id and state first and the reason
        # last; the job name is never printed, so no name can confuse the parser.
        # `-t all` keeps finished records (until MinJobAge) so FAILED/TIMEOUT show up
        # before the grace period runs out.
        #
        # Why `-u` and not `--jobs=ID,...`: squeue exits 1 with "Invalid job id specified"
        # when a listed id has already been purged (after MinJobAge, default 300 s; seen
        # with Slurm 22.05, see aiida-core#4326), which would fail the whole poll.  A
        # listing by user never names a job, so it cannot fail that way: a purged job is
        # simply absent, and the jobs layer waits for its marker.
        # "$(id -un)": $USER is not set in every non-interactive ssh session.
        # -r: one line per array task (123_4), pending ones included, never a range 123_[5-10].
        return f"squeue --noheader --array --user=\"$(id -un)\" --states=all --format='%i{_SEP}%T{_SEP}%r'"

    memory_kill_text = "Exceeded job memory limit"
    # slurmstepd's words when jobacct_gather's OverMemoryKill kills a job (its record: FAILED 0:9);
    # with cgroups the record says OUT_OF_MEMORY itself

    def accounting_command(self, remote_ids: Sequence[str]) -> str:
        # slurmdbd's accounting where there is one, else the job completion log (JobCompLoc,
        # `sacct -c`); a cluster with neither prints nothing and the job waits out its grace.
        # WorkDir last: a directory may hold the separator
        fields = f"-P -n -o JobID,State,ExitCode,Timelimit,WorkDir -j {shlex.quote(','.join(remote_ids))}"
        return f"sacct {fields} 2>/dev/null || sacct -c {fields} 2>/dev/null"

    def parse_accounting_output(self, stdout: str) -> dict[str, Accounted]:
        found: dict[str, Accounted] = {}
        for line in stdout.splitlines():
            parts = line.strip().split(_SEP)
            if len(parts) < 5 or not parts[0] or "." in parts[0]:  # 123.batch: a step, not the job
                continue
            name = parts[1].split()[0] if parts[1].strip() else ""  # "CANCELLED by 0"
            state = _SLURM_STATES.get(name)
            if state is None or state in ACTIVE_STATES:
                continue
            exit_code = parts[2].strip()
            cause = _CAUSES.get(name)
            ending = Ending(cause, f"Slurm {name}", _time_limit(parts[3])) if cause is not None else None
            # the last record of an id is the newest
            found[parts[0]] = Accounted(state, exit_code, _SEP.join(parts[4:]).strip(), ending,
                                        killed=name == "FAILED" and exit_code.endswith(":9"))
        return found

    def parse_status_output(self, stdout: str) -> dict[str, QueueState]:
        states: dict[str, QueueState] = {}
        for line in stdout.splitlines():
            # Fields 1-3 only: whatever a differently configured squeue appends (a name
            # with '|' in it) is never read.  Reasons are single words (JobHeldUser, ...).
            parts = line.strip().split(_SEP)
            if len(parts) < 2 or not parts[0]:
                continue
            job_id, state = parts[0], parts[1].strip()
            reason = parts[2].strip() if len(parts) > 2 else ""
            mapped = _SLURM_STATES.get(state)
            if mapped is None:
                logger.warning("squeue reports job %s in state %r, which wfl_async does not know; "
                               "treating it as still active", job_id, state)
                mapped = QueueState.UNKNOWN
            elif mapped is QueueState.QUEUED and state == "PENDING" and reason in _HELD_REASONS:
                mapped = QueueState.HELD
            pending = _PENDING_TASKS.match(job_id)
            if pending:  # a listing made without -r: every task of the range
                states.update((self.array_task_id(pending[1], i), mapped) for i in expand_indices(pending[2]))
            else:
                states[job_id] = mapped
        return states
