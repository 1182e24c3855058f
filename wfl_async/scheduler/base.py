"""The scheduler interface: pure functions from job descriptions to shell text and back.

A scheduler does no I/O. The system (``wfl_async.system``) runs the commands a scheduler
builds, over whichever transport it has, and hands the output back to be parsed. That keeps
every scheduler testable on captured output, and lets the system batch: one command
submits many job scripts, one command reports on every outstanding job.
"""

from __future__ import annotations

import os
import re
import shlex
import string
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..errors import SchedulerError
from ..jobs import layout
from ..jobs.states import QueueState

__all__ = ["ARRAYS_DIR", "Accounted", "DEFAULT_MAX_ARRAY_SIZE", "MAX_BATCH", "SUBMIT_RECORD_END", "ErrorKind", "JobScriptSpec",
           "Scheduler", "SubmitOutputReader", "SubmitResult"]

MAX_BATCH = 300
"""Job directories per submit/poll command: keeps the command line well under ARG_MAX."""

_SUBMIT_HEADER = re.compile(r"^(\d+)\t(\d+)\t(.*)$")
SUBMIT_RECORD_END = "@@wfl_async_submitted@@"
"""Ends each record of the batch submit command's output."""
UNRESOLVED = "@@wfl_async_unresolved@@"
"""Starts the record of a job whose earlier submission has no usable answer."""
UNRESOLVED_RC = 75
IN_PROGRESS = "another submission of this job is still running"
"""Starts the record of a job whose lock is held by a submission still running (a transient complaint)."""
ARRAY_TASK = "@@wfl_async_array_task@@"
"""Starts the answer of one task of an array submission: ``ARRAY_TASK <task index> <submit output>``."""
ARRAY_FOUND = "@@wfl_async_array_found@@"
"""Starts a line of the find command's output naming one task of an array: ``<array id> <index> <dir>``."""
ARRAYS_DIR = "_wfl_async_arrays"
"""Directory under the remote root holding each array submission's dispatcher script and task list."""
ARRAY_TASK_OUTPUT = "job.array_task"
"""Base name of an array task's stdout/stderr files in its job directory."""
ARRAY_TASKS_FILE = "tasks"
"""In an array's directory: the job directory of each task, one a line, in task order."""
DEFAULT_MAX_ARRAY_SIZE = 1000
"""Tasks per array submission unless a system sets ``max_array_size``: fits Slurm's default
``MaxArraySize`` (1001: indices 0-1000), PBS Pro's ``max_array_size`` (10000) and SGE's
``max_aj_tasks`` (75000); above :data:`MAX_BATCH` a batch is the bound anyway."""
IN_PROGRESS_MINUTES = 5
"""How long a lock without an answer counts as in progress when its holder cannot be checked: it
runs on another host (login nodes behind one name: a command repeated after a dropped connection
may land on another one), or the lock names no holder (written by an older version)."""


def time_to_hms(seconds: int) -> str:
    """``H:MM:SS`` as Slurm, PBS and SGE accept it."""
    return f"{seconds // 3600}:{(seconds // 60) % 60:02d}:{seconds % 60:02d}"


@dataclass(frozen=True)
class JobScriptSpec:
    """Everything needed to write one job script.

    ``header`` lines may use ExPyRe's placeholders ``{num_nodes}``, ``{num_cores}``,
    ``{num_cores_per_node}``, ``{partition}``, ``{queue}``, ``{id}`` and ``{max_time}``.
    """

    job_id: str
    """Name of the job in the queue (``{id}``); already safe for a scheduler directive."""
    job_dir: str
    """Absolute directory of the job on the system where it runs."""
    partition: str
    num_nodes: int
    num_cores: int
    num_cores_per_node: int
    max_time: int
    """Seconds."""
    header: Sequence[str] = ()
    commands: Sequence[str] = ()
    no_default_header: bool = False
    script_exec: str = "/bin/bash"
    placeholders: Mapping[str, str] = field(default_factory=dict)

    def fields(self) -> dict[str, object]:
        return {
            "id": self.job_id,
            "partition": self.partition,
            "queue": self.partition,
            "num_nodes": self.num_nodes,
            "num_cores": self.num_cores,
            "num_cores_per_node": self.num_cores_per_node,
            "ncores": self.num_cores,
            "ppn": self.num_cores_per_node,
            "max_time": time_to_hms(self.max_time),
            **self.placeholders,
        }


@dataclass(frozen=True)
class SubmitResult:
    """Outcome of submitting one script of a batch: a remote id, or the scheduler's complaint."""

    remote_id: str | None
    error: str | None = None
    unresolved: bool = False
    """An earlier submission of this job has no usable answer: look for the job before resubmitting."""


@dataclass(frozen=True)
class Accounted:
    """How a job that left the queue ended, by the scheduler's accounting (``sacct``)."""

    state: QueueState
    exit_code: str = ""
    """The scheduler's exit code (Slurm's ``exit:signal``, e.g. ``120:0``); "" if unknown."""
    work_dir: str = ""
    """The job's working directory: ids are reused (a wiped controller), so a record counts only
    for the job directory it names."""

    def detail(self) -> str:
        return f"exit code {self.exit_code}" if self.exit_code else ""


ErrorKind = Literal["transient", "limit"]
"""``transient``: the scheduler could not answer now (timeout, controller down), retry soon;
``limit``: it refused because the user has too many jobs queued, retry once there is room."""

_COMMON_TRANSIENT = (r"Resource temporarily unavailable", r"Connection (refused|reset|timed out)",
                     r"Temporary failure", r"try again", re.escape(IN_PROGRESS))
"""Complaints of every scheduler's client that mean 'not now' (errno texts of the C library)."""


class Scheduler(ABC):
    """Builds job scripts and scheduler commands; parses what the commands print.

    Subclasses set the class variables and implement the four ``*_status``/``parse`` hooks.
    """

    name: ClassVar[str]
    script_name: ClassVar[str]
    """File name of the job script inside the job directory."""
    submit_program: ClassVar[str]
    """Shell words that submit ``script_name`` from inside the job directory."""
    cancel_program: ClassVar[str]
    hold_program: ClassVar[str]
    release_program: ClassVar[str]
    env_prefix: ClassVar[str]
    """Prefix of the variables the scheduler sets in a job (``SLURM``, ``PBS``, ``SGE``)."""
    transient_errors: ClassVar[tuple[str, ...]] = ()
    """Regular expressions of this scheduler's 'could not answer now' complaints."""
    limit_errors: ClassVar[tuple[str, ...]] = ()
    """Regular expressions of this scheduler's 'too many jobs of this user' refusals."""

    # ---------------------------------------------------------------- job script
    @abstractmethod
    def default_header(self) -> list[str]:
        """Directives added unless the system sets ``no_default_header``."""

    @abstractmethod
    def cores_per_node_commands(self, spec: JobScriptSpec) -> list[str]:
        """Shell lines that export ``EXPYRE_NUM_CORES_PER_NODE`` inside the running job."""

    def render_header(self, spec: JobScriptSpec) -> list[str]:
        """The script's directive lines, placeholders filled in (the default header first)."""
        fields = spec.fields()
        header = list(spec.header)
        if not spec.no_default_header:
            header = self.default_header() + header
        return [self._format_line(line, fields) for line in header]

    def render_script(self, spec: JobScriptSpec) -> str:
        """The whole job script: header directives, ExPyRe's ``EXPYRE_NUM_*`` variables, body."""
        header_text = self.render_header(spec)
        commands = [
            *self.cores_per_node_commands(spec),
            f"export EXPYRE_NUM_NODES={spec.num_nodes}",
            f"export EXPYRE_NUM_CORES={spec.num_cores}",
            # ExPyRe's older spellings, used in wfl's documentation (EXPYRE_NCORES_PER_NODE)
            "export EXPYRE_NCORES_PER_NODE=$EXPYRE_NUM_CORES_PER_NODE",
            f"cd {shlex.quote(spec.job_dir)}",
            *spec.commands,
        ]
        return "#!" + spec.script_exec + "\n" + "\n".join(header_text) + "\n\n" + "\n".join(commands) + "\n"

    @staticmethod
    def _format_line(line: str, fields: Mapping[str, object]) -> str:
        """Fill ``{name}`` placeholders; only plain names of ``fields`` (no ``{id.attr}``, ``{0}``)."""
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(line) if name is not None]
        except ValueError as exc:
            raise SchedulerError(
                f"header line {line!r} is not a valid template ({exc}); placeholders are "
                f"{sorted(fields)}, written as {{name}}; write literal braces as '{{{{' and '}}}}'"
            ) from exc
        for name in names:
            if name not in fields:
                raise SchedulerError(
                    f"header line {line!r} uses placeholder {name!r} which is not one of "
                    f"{sorted(fields)}; fix the 'header' entry in config.json (write literal braces as '{{{{')"
                )
        try:
            return line.rstrip().format(**fields)
        except (ValueError, TypeError) as exc:  # e.g. a format spec that does not fit the value
            raise SchedulerError(f"header line {line!r} cannot be filled in: {exc}") from None

    # ---------------------------------------------------------------- submit
    def submit_command(self, job_dirs: Sequence[str], indices: Sequence[int] | None = None) -> str:
        """One shell command that submits the job script in each of ``job_dirs``.

        For each directory, in order, it prints a record: a line ``index<TAB>exit status<TAB>``
        followed by the submit program's output, then a line :data:`SUBMIT_RECORD_END`, so one
        failed submission does not hide the rest and each record can be read as it arrives.
        ``indices`` (default 0, 1, ...) number the records: their places in the whole batch.
        """
        # Exactly once, even when the scheduler's answer is lost: the submitter that creates the
        # lock file (O_EXCL through noclobber) submits and always keeps the scheduler's answer,
        # exit status first (written to a temporary name, then renamed). The lock is taken in the
        # subshell that runs the submit program, and names it (host, pid, start time: _SELF).
        # The lock is never removed here: anyone later finds a successful answer (and
        # reuses it), or no answer while the holder lives (a submission in progress: reported as
        # IN_PROGRESS, a transient complaint, so the driver waits and asks again), or else an
        # unresolved one (a failed, killed or interrupted submission), reported as UNRESOLVED so
        # that the driver looks for the job in the queue and in its directory before releasing
        # the lock and submitting again (see wfl_async.system.submit_loop).
        # Per job this costs what a plain submit loop costs, plus one fork (the `mv`).
        return (
            f"{self.unset_env_command()}{_THIS_HOST} {_for_each_dir(job_dirs, indices)} "
            f'out=$(set -C; {_SELF} if {{ {_STAMP_LOCK}; }} 2>/dev/null; then set +C; '
            f'cd "$d" && {self.submit_invocation()} </dev/null 2>&1; else printf %s {_LOCKED}; fi); rc=$?; '
            f'if [ "$out" = {_LOCKED} ]; then {_EARLIER_ANSWER} else {_KEEP_ANSWER} {_RECORD} fi; done'
        )

    # ---------------------------------------------------------------- arrays
    array_option: ClassVar[str | None] = None
    """Submit-program option followed by an array's index range (``--array=``); None: no arrays."""
    array_index_variable: ClassVar[str] = ""
    """Shell expression of the index of the array task running."""
    first_array_index: ClassVar[int] = 0
    """Index of an array's first task (SGE counts from 1)."""

    @property
    def supports_arrays(self) -> bool:
        return self.array_option is not None

    def array_task_id(self, array_id: str, index: int) -> str:
        """The scheduler's id of task ``index`` of array ``array_id`` (``123_4``, ``123.4``, ``123[4]``)."""
        return f"{array_id}_{index}"

    def array_parent_id(self, remote_id: str) -> str | None:
        """The array's id if ``remote_id`` names one task of an array, else None."""
        head, sep, index = remote_id.rpartition("_")
        return head if sep and index.isdigit() else None

    def render_array_script(self, spec: JobScriptSpec, array_dir: str) -> str:
        """The script of an array submission: each task runs the job script of its own job directory.

        ``spec`` gives the header (every task of an array has the same, with the array's name);
        task *i* finds its job directory on line *i* of ``array_dir``'s task list, and runs the job
        script there, as a job submitted alone would, its output in ``ARRAY_TASK_OUTPUT.stdout``
        and ``.stderr`` there.
        """
        tasks = shlex.quote(f"{array_dir}/{ARRAY_TASKS_FILE}")
        body = [
            f"wfl_async_task={self.array_index_variable}",
            f'wfl_async_dir=$(sed -n "$((wfl_async_task - {self.first_array_index} + 1))p" {tasks})',
            'if [ -z "$wfl_async_dir" ] || ! cd "$wfl_async_dir"; then',
            f'    echo "wfl_async: array task $wfl_async_task has no job directory in {tasks}" >&2; exit 1',
            "fi",
            f"exec {spec.script_exec} ./{shlex.quote(self.script_name)} > {ARRAY_TASK_OUTPUT}.stdout "
            f"2> {ARRAY_TASK_OUTPUT}.stderr",
        ]
        return "#!" + spec.script_exec + "\n" + "\n".join(self.render_header(spec)) + "\n\n" + "\n".join(body) + "\n"

    def array_submit_command(self, array_dir: str, script: str, job_dirs: Sequence[str],
                             indices: Sequence[int]) -> str:
        """One shell command submitting ``job_dirs`` as tasks of one array (``script`` from
        :meth:`render_array_script`), printing the same records as :meth:`submit_command`.

        Each job directory keeps its own lock and answer: the directories whose lock this command
        takes become the array's tasks, in order, and each gets the answer
        ``ARRAY_TASK <task index> <submit output>``, from which its own task id is read (now and
        by any rerun). Directories locked earlier answer from their earlier answer, as in a loop.
        """
        if not self.supports_arrays:
            raise SchedulerError(f"the {self.name} scheduler cannot submit job arrays")
        a, tasks, index = '"$wfl_a"', f'"$wfl_a/{ARRAY_TASKS_FILE}"', '"$wfl_a/index"'
        first = self.first_array_index
        task_answer = f'out="{ARRAY_TASK} $t $out_all"'
        return (
            f"( {self.unset_env_command()}{_THIS_HOST} {_SELF} wfl_a={shlex.quote(array_dir)}; "
            f"mkdir -p {a} && printf '%s' {shlex.quote(script)} > {a}/{shlex.quote(self.script_name)} && "
            f": > {tasks}.new && : > {index}.new || exit 1; "
            f"{_for_each_dir(job_dirs, indices)} "
            f"set -C; if {{ {_STAMP_LOCK}; }} 2>/dev/null; then set +C; printf '%s\\n' \"$d\" >> {tasks}.new; "
            f"printf '%s\\n' \"$i\" >> {index}.new; else set +C; {_EARLIER_ANSWER} fi; done; "
            f"if [ -s {tasks}.new ]; then mv -f {tasks}.new {tasks} && mv -f {index}.new {index} || exit 1; "
            f"n=$(wc -l < {tasks}); "
            f"out_all=$(cd {a} && {self.submit_program} {self.array_option}{first}-$((n - 1 + {first})) "
            f"{shlex.quote(self.script_name)} </dev/null 2>&1); rc=$?; "
            f"t={first}; while IFS= read -r d && IFS= read -r i <&3; do {task_answer}; {_KEEP_ANSWER} {_RECORD} "
            f"t=$((t + 1)); done < {tasks} 3< {index}; fi )"
        )

    def parse_submit_output(self, stdout: str, count: int) -> list[SubmitResult]:
        """Turn ``submit_command``'s output into one result per submitted directory."""
        # a job without a record may or may not have been submitted: it is looked for before a retry
        results = [SubmitResult(None, "no answer from the submit command", unresolved=True)] * count
        reader = SubmitOutputReader(self)
        for line in [*stdout.splitlines(), SUBMIT_RECORD_END]:
            parsed = reader.feed(line)
            if parsed is not None and parsed[0] < count:
                results[parsed[0]] = parsed[1]
        return results

    def parse_submit_record(self, index: int, rc: str, output: str) -> tuple[int, SubmitResult]:
        """The result of one record of ``submit_command``'s output.

        An id in the output counts whatever the exit status: a submit program that queued the
        job and then reported an error (a timeout after the job was taken) did queue it.
        """
        output = " ".join(output.split())
        unresolved = rc == str(UNRESOLVED_RC) and output.startswith(UNRESOLVED)
        if unresolved:
            output = output[len(UNRESOLVED):].strip()
        task, output = _array_task(output)
        remote_id = self.parse_submitted_id(output)
        if remote_id is not None and task is not None:
            remote_id = self.array_task_id(remote_id, task)
        return index, SubmitResult(remote_id, None if remote_id else (output or f"exit status {rc}"),
                                   unresolved=unresolved and remote_id is None)

    # ---------------------------------------------------------------- errors
    def classify_error(self, output: str) -> ErrorKind | None:
        """Whether a scheduler command's complaint is worth retrying (see :data:`ErrorKind`).

        The patterns are each scheduler's own (:attr:`transient_errors`, :attr:`limit_errors`).
        """
        if any(re.search(p, output, re.I) for p in self.limit_errors):
            return "limit"
        if any(re.search(p, output, re.I) for p in (*self.transient_errors, *_COMMON_TRANSIENT)):
            return "transient"
        return None

    def accounting_command(self, remote_ids: Sequence[str]) -> str | None:
        """One command printing the accounting record of each of ``remote_ids`` (jobs the queue no
        longer lists), or None when this scheduler keeps none that wfl_async can read."""
        return None

    def parse_accounting_output(self, stdout: str) -> dict[str, Accounted]:
        """Remote id -> how the job ended (its newest record), from :meth:`accounting_command`'s output."""
        return {}

    def find_command(self) -> str | None:
        """One command listing ``<remote id> <working directory>`` for each job of the user in the queue.

        Used before submitting a job again whose earlier submission has no answer (the command
        died or its answer was lost), so that a job already queued is re-attached, not duplicated.
        None: this scheduler cannot list working directories (then only the job's markers tell).
        """
        return None

    def parse_find_output(self, stdout: str) -> dict[str, str]:
        """Working directory -> remote id, from :meth:`find_command`'s output."""
        found: dict[str, str] = {}
        for line in stdout.splitlines():
            if line.startswith(ARRAY_FOUND + " "):
                _, array_id, index, workdir = line.split(" ", 3)
                found[workdir.strip().rstrip("/")] = self.array_task_id(array_id, int(index))
                continue
            remote_id, _, workdir = line.strip().partition(" ")
            if remote_id and workdir:
                found[workdir.strip().rstrip("/")] = remote_id
        return found

    def with_array_tasks(self, find: str) -> str:
        """``find`` (printing ``<id> <working directory>``), each array's line replaced by its tasks.

        An array runs in its own directory under :data:`ARRAYS_DIR`; its task list names each
        task's job directory, so a task queued by a submission whose answer was lost is found
        (every task of an array still listed is reported: a task already gone is then seen missing
        by the poll, as any job). The exit status is ``find``'s.
        """
        program = (
            f'{{ id = $1; wd = substr($0, length($1) + 2); if (index(wd, "/{ARRAYS_DIR}/")) {{ '
            'base = id; sub(/[_.[].*$/, "", base); arrays[wd] = base } else print id " " wd } '
            f'END {{ for (wd in arrays) {{ f = wd "/{ARRAY_TASKS_FILE}"; n = {self.first_array_index}; '
            f'while ((getline line < f) > 0) {{ print "{ARRAY_FOUND} " arrays[wd] " " n " " line; n++ }} '
            "close(f) } }"
        )
        return f"wfl_listing=$({find}) && printf '%s\\n' \"$wfl_listing\" | awk {shlex.quote(program)}"

    def submit_invocation(self) -> str:
        """Shell text that submits ``script_name`` from inside the job directory.

        ``submit_program`` followed by the script name, unless a scheduler needs more
        (the local scheduler launches a detached runner whose words depend on its options).
        """
        return f"{self.submit_program} {shlex.quote(self.script_name)}"

    @abstractmethod
    def parse_submitted_id(self, output: str) -> str | None:
        """The job id in the submit program's output, or None if there is none."""

    def unset_env_command(self) -> str:
        """With ``WFL_SCHEDULER_IGNORE_ENV`` set, drop the enclosing job's scheduler variables.

        Needed when a workflow itself runs inside a queued job and submits more jobs.
        """
        if "WFL_SCHEDULER_IGNORE_ENV" not in os.environ:
            return ""
        names = [v for v in os.environ if v.startswith(self.env_prefix + "_")]
        return "".join(f"unset {shlex.quote(n)}; " for n in names)

    # ---------------------------------------------------------------- status
    @abstractmethod
    def status_command(self) -> str:
        """One command that lists every job of the current user with its state."""

    @abstractmethod
    def parse_status_output(self, stdout: str) -> dict[str, QueueState]:
        """Map remote id to state for every job ``status_command`` listed."""

    # ---------------------------------------------------------------- control
    def cancel_command(self, remote_ids: Sequence[str]) -> str:
        return self._ids_command(self.cancel_program, remote_ids)

    def hold_command(self, remote_ids: Sequence[str]) -> str:
        return self._ids_command(self.hold_program, remote_ids)

    def release_command(self, remote_ids: Sequence[str]) -> str:
        return self._ids_command(self.release_program, remote_ids)

    @staticmethod
    def _ids_command(program: str, remote_ids: Sequence[str]) -> str:
        for rid in remote_ids:
            if not re.fullmatch(r"[A-Za-z0-9_.\[\]-]+", rid):
                raise SchedulerError(f"refusing to pass odd job id {rid!r} to {program}")
        return f"{program} {' '.join(shlex.quote(r) for r in remote_ids)}"


class SubmitOutputReader:
    """Reads ``submit_command``'s output line by line, as it arrives, returning finished records.

    A record is a header line (index, exit status, first output line), any further output
    lines, and :data:`SUBMIT_RECORD_END`; a new header also ends the record before it (as in
    output captured before end markers existed).
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._record: tuple[int, str, list[str]] | None = None

    def feed(self, line: str) -> tuple[int, SubmitResult] | None:
        header = _SUBMIT_HEADER.match(line)
        if header is None and line != SUBMIT_RECORD_END:
            if self._record is not None:
                self._record[2].append(line)
            return None
        finished = self._finish()
        if header is not None:
            self._record = (int(header[1]), header[2], [header[3]])
        return finished

    def _finish(self) -> tuple[int, SubmitResult] | None:
        if self._record is None:
            return None
        index, rc, lines = self._record
        self._record = None
        return self.scheduler.parse_submit_record(index, rc, "\n".join(lines))


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
_THIS_HOST = '{ read -r wfl_host </proc/sys/kernel/hostname; } 2>/dev/null || wfl_host=$(uname -n);'
"""Shell setting ``$wfl_host`` to this machine's name (builtins only on Linux; once per command)."""
_SELF = f'{{ read -r s </proc/self/stat; }} 2>/dev/null || s=""; p=${{s%% *}}; {PROC_START}; wfl_me="$wfl_host $p $s";'
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
_KEEP_ANSWER = (f"printf '%s\\n%s\\n' \"$rc\" \"$out\" > \"$d/{layout.SUBMIT_ANSWER}.tmp\" && "
                f'mv -f "$d/{layout.SUBMIT_ANSWER}.tmp" "$d/{layout.SUBMIT_ANSWER}";')
"""Shell text keeping ``$rc`` and ``$out`` as the answer of job directory ``$d`` (renamed into place)."""
_RECORD = f"printf '%d\\t%d\\t%s\\n{SUBMIT_RECORD_END}\\n' \"$i\" \"$rc\" \"$out\";"
"""Shell text printing the record of job ``$i``: index, exit status, output."""
_EARLIER_ANSWER = (
    f'if [ "$(head -n 1 "$d/{layout.SUBMIT_ANSWER}" 2>/dev/null)" = 0 ]; then rc=0; '
    f'out=$(tail -n +2 "$d/{layout.SUBMIT_ANSWER}"); '
    f'elif [ ! -e "$d/{layout.SUBMIT_ANSWER}" ] && {_HOLDER_LIVES}; then rc=1; '
    f'out="{IN_PROGRESS} (its lock names ${{p:+process $p on }}${{wfl_lh:-no holder}}); waiting for it to answer"; '
    f'else rc={UNRESOLVED_RC}; out="{UNRESOLVED} $(tail -n +2 "$d/{layout.SUBMIT_ANSWER}" 2>/dev/null)"; fi; {_RECORD}'
)
"""Shell text for a job directory locked by an earlier submission: reuse its answer, report it in
progress (its holder may still be running), or report it unresolved (the driver looks for the job)."""
_ARRAY_TASK_ANSWER = re.compile(re.escape(ARRAY_TASK) + r" (\d+) ?(.*)$")


def _for_each_dir(job_dirs: Sequence[str], indices: Sequence[int] | None) -> str:
    """Shell text starting a loop that sets ``$i`` (the record's index) and ``$d`` (the directory)."""
    numbers = range(len(job_dirs)) if indices is None else indices
    pairs = " ".join(shlex.quote(f"{i}:{d}") for i, d in zip(numbers, job_dirs, strict=True))
    return f'for e in {pairs}; do i=${{e%%:*}}; d=${{e#*:}};'


def _array_task(output: str) -> tuple[int | None, str]:
    """The task index of an array task's answer and the rest of it; (None, output) for a plain answer."""
    m = _ARRAY_TASK_ANSWER.match(output)
    return (int(m.group(1)), m.group(2)) if m else (None, output)


def expand_indices(ranges: str) -> list[int]:
    """Task indices of a range list as schedulers print them: ``1-10:2``, ``0,4``, ``[0-3,7%2]``."""
    indices: list[int] = []
    for part in ranges.strip().strip("[]").split("%")[0].split(","):
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        if not first.strip().isdigit() or (last and not last.strip().isdigit()) or (step and not step.isdigit()):
            continue
        indices.extend(range(int(first), int(last or first) + 1, int(step or 1) or 1))
    return indices
