"""PBS Pro / OpenPBS / Torque: ``qsub``, ``qstat -u``, ``qdel``, ``qhold``, ``qrls``."""

from __future__ import annotations

import dataclasses
import logging
import re

from ..jobs.states import QueueState
from .base import JobScriptSpec, Scheduler

__all__ = ["PBSScheduler"]

logger = logging.getLogger(__name__)

# Job states of qstat(1B) (PBS Pro/OpenPBS reference guide) and Torque's qstat(1):
_PBS_STATES: dict[str, QueueState] = {
    # B  Job arrays only: job array has started (at least one subjob is running).
    "B": QueueState.RUNNING,
    # C  (Torque) Job is completed after having run.
    "C": QueueState.FINISHED,
    # E  Job is exiting after having run.  The script may still be writing its files.
    "E": QueueState.RUNNING,
    # F  (PBS Pro, with -x) Job is finished.
    "F": QueueState.FINISHED,
    # H  Job is held.
    "H": QueueState.HELD,
    # M  Job was moved to another server.  It lives on there: still active.
    "M": QueueState.QUEUED,
    # Q  Job is queued, eligible to run or routed.
    "Q": QueueState.QUEUED,
    # R  Job is running.
    "R": QueueState.RUNNING,
    # S  Job is suspended.
    "S": QueueState.RUNNING,
    # T  Job is being moved to new location.
    "T": QueueState.QUEUED,
    # U  Cycle-harvesting job is suspended due to keyboard activity.
    "U": QueueState.RUNNING,
    # W  Job is waiting for its submitter-assigned start time (qsub -a) to be reached.
    "W": QueueState.QUEUED,
    # X  Subjobs only: subjob is finished (expired).
    "X": QueueState.FINISHED,
}

# "1234.server", "1234[].server", "1234.long-server-na*" (qstat truncates long ids with
# '*'), or a bare "1234" (the Torque wrappers on Slurm).  The number (and array brackets)
# before the first dot identifies the job on its server.
_PBS_ID = re.compile(r"^(\d+(?:\[\d*\])?)(?:\.\S*)?$")
_TASK_ID = re.compile(r"^(\d+)\[(\d+)\]$")


def pbs_job_key(word: str) -> str | None:
    """The part of a PBS job id that ``qstat`` never truncates: ``1234`` of ``1234.server``."""
    m = _PBS_ID.match(word.strip())
    return m.group(1) if m else None


class PBSQueueStates(dict[str, QueueState]):
    """A PBS listing, where a task of an array not listed by itself has the state of its array.

    PBS lists an array as ``1234[]`` (``-t`` adds its subjobs, ``1234[5]``); the Torque-style
    commands on Slurm list the array's pending tasks as ``1234``. A task only summarised is
    still active as long as its array is.
    """

    def get(self, key: str, default: QueueState | None = None) -> QueueState | None:  # type: ignore[override]
        if key in self:
            return self[key]
        task = _TASK_ID.match(key)
        if task is not None:
            for parent in (f"{task[1]}[]", task[1]):
                if parent in self:
                    return self[parent]
        return default


class PBSScheduler(Scheduler):
    """PBS (Pro, OpenPBS, Torque), as ExPyRe's ``pbs`` scheduler drives it.

    Remote ids are the job number without the server name (``1234`` for ``1234.server``),
    because ``qstat -u`` truncates long ``number.server`` ids; ``qdel``/``qhold``/``qrls``
    accept the bare number for jobs of the default server.
    """

    name = "pbs"
    script_name = "job.script.pbs"
    submit_program = "qsub"
    cancel_program = "qdel"
    hold_program = "qhold"
    release_program = "qrls"
    env_prefix = "PBS"
    # -J: PBS Pro/OpenPBS (and the Torque-style commands on Slurm, which also take -t);
    # the index variable is PBS Pro's, then Torque's, then Slurm's (under those commands)
    array_option = "-J "
    array_index_variable = "${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-${SLURM_ARRAY_TASK_ID:-}}}"
    # Texts of PBS Pro/Torque qsub/qstat; the PBS-style commands tested here are Slurm's Torque
    # wrappers, which pass Slurm's own complaints through
    transient_errors = (r"cannot connect to server", r"pbs_iff: cannot", r"End of File", r"Premature end of message",
                        r"Socket timed out on send/recv operation", r"slurmctld not responding",
                        r"Unable to contact slurm controller")
    limit_errors = (r"Maximum number of jobs already in queue", r"would exceed .*per-user limit",
                    r"QOSMaxSubmitJobPerUserLimit", r"AssocMaxSubmitJobLimit")

    def default_header(self) -> list[str]:
        # N_: a PBS job name must start with a letter.
        return [
            "#PBS -N N_{id}",
            "#PBS -l walltime={max_time}",
            "#PBS -o job.{id}.stdout",
            "#PBS -e job.{id}.stderr",
            "#PBS -S /bin/bash",
            "#PBS -r n",
        ]

    def render_header(self, spec: JobScriptSpec) -> list[str]:
        # As ExPyRe: PBS rejects '=' in "#PBS -N" (despite the documentation), and
        # base64-url hashes contain it.
        return super().render_header(dataclasses.replace(spec, job_id=spec.job_id.replace("=", "EQ")))

    def array_task_id(self, array_id: str, index: int) -> str:
        return f"{array_id.removesuffix('[]')}[{index}]"

    def array_parent_id(self, remote_id: str) -> str | None:
        task = _TASK_ID.match(remote_id)
        return task[1] if task else None

    def memory_directive(self, spec: JobScriptSpec) -> str:
        # the whole job's memory (PBS Pro/Torque: -l mem)
        return f"#PBS -l mem={-(-int(spec.mem_kb or 0) // 1024)}mb"

    def cores_per_node_commands(self, spec: JobScriptSpec) -> list[str]:
        # Torque sets PBS_NUM_PPN; otherwise count this node's lines in PBS_NODEFILE.
        return [
            'if [ -n "${PBS_NUM_PPN:-}" ]; then',
            "    export EXPYRE_NUM_CORES_PER_NODE=$PBS_NUM_PPN",
            'elif [ -n "${PBS_NODEFILE:-}" ] && [ -r "$PBS_NODEFILE" ]; then',
            "    export EXPYRE_NUM_CORES_PER_NODE=$(sort \"$PBS_NODEFILE\" | uniq -c | head -n 1 | awk '{print $1}')",
            "else",
            f"    export EXPYRE_NUM_CORES_PER_NODE={int(spec.num_cores_per_node)}",
            "fi",
        ]

    def parse_submitted_id(self, output: str) -> str | None:
        # qsub prints the id ("1234.server") as its last word.
        words = output.split()
        return pbs_job_key(words[-1]) if words else None

    def status_command(self) -> str:
        # Every job of the user in one call.  `-u` selects the alternate (-a) table on
        # PBS Pro, OpenPBS and Torque alike.  Not `-x` (finished jobs on PBS Pro, but XML
        # output on Torque) and not `-w` (PBS Pro only).
        # "$(id -un)": $USER is not set in every non-interactive ssh session.
        # -t lists each subjob of an array (PBS Pro, OpenPBS, Torque); the Torque-style
        # commands on Slurm refuse -t (a usage message, exit 2): then the plain listing.
        return 'qstat -t -u "$(id -un)" 2>/dev/null || qstat -u "$(id -un)"'

    def parse_status_output(self, stdout: str) -> PBSQueueStates:
        # Rows are: Job ID, Username, Queue, Jobname, SessID, NDS, TSK, Memory, Req'd Time,
        # S, Elap Time.  The name may contain spaces, so only the first word (the id) and the
        # last-but-one (S) are read; every column after the name is a single word ("--"
        # when empty).  Headers, "server:" lines and rules do not start with a job number.
        states = PBSQueueStates()
        for line in stdout.splitlines():
            words = line.split()
            if len(words) < 3:
                continue
            key = pbs_job_key(words[0].rstrip("*"))
            if key is None:
                continue
            code = words[-2]
            mapped = _PBS_STATES.get(code)
            if mapped is None:
                logger.warning("qstat reports job %s in state %r, which wfl_async does not know; "
                               "treating it as still active", words[0], code)
                mapped = QueueState.UNKNOWN
            states[key] = mapped
        return states
