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
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

from ..errors import ConfigurationError, SchedulerError
from ..jobs.ended import EndCause, Ending
from ..jobs.layout import JOB_STARTED_ENV
from ..jobs.states import QueueState
from . import arrays
from .submit_lock import IN_PROGRESS, SET_HOLDER, SET_HOST, UNRESOLVED, UNRESOLVED_RC, submit_once

__all__ = ["Accounted", "MAX_BATCH", "SUBMIT_RECORD_END", "ErrorKind", "JobScriptSpec",
           "Scheduler", "SubmitOutputReader", "SubmitResult"]

MAX_BATCH = 300
"""Job directories per submit/poll command: keeps the command line well under ARG_MAX."""

_SUBMIT_HEADER = re.compile(r"^(\d+)\t(\d+)\t(.*)$")
SUBMIT_RECORD_END = "@@wfl_async_submitted@@"
"""Ends each record of the batch submit command's output."""


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
    mem_kb: int | None = None
    """Memory the job asks for (kB, all its nodes; :meth:`Scheduler.memory_directive`); None: none."""

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
    """How a job that left the queue ended, by the scheduler's accounting (``sacct``, ``qacct``)."""

    state: QueueState
    exit_code: str = ""
    """The scheduler's exit code (Slurm's ``exit:signal``, e.g. ``120:0``); "" if unknown."""
    work_dir: str = ""
    """The job's working directory: ids are reused (a wiped controller), so a record counts only
    for the job directory it names ("": the accounting does not say)."""
    ending: Ending | None = None
    """Why it ended, where the accounting tells (None: it finished, or the record says nothing more)."""
    killed: bool = False
    """It was killed by a signal without a stated cause: a kill for memory if its stderr says so
    (:attr:`Scheduler.memory_kill_text`)."""

    def detail(self) -> str:
        """What a died job's message adds: the cause the accounting named (a plain failure names
        none: its exit code is the news), and the exit code."""
        if self.ending is not None and self.ending.cause is not EndCause.FAILED:
            return self.ending.sentence() + (f", exit code {self.exit_code}" if self.exit_code else "")
        return f"exit code {self.exit_code}" if self.exit_code else ""

    def memory_killed(self, scheduler: str) -> Accounted:
        """This record, its cause being a kill for memory (its stderr said so)."""
        how = self.ending.scheduler if self.ending is not None else scheduler
        return replace(self, ending=Ending(EndCause.OUT_OF_MEMORY, f"{how}, memory limit in its stderr"))


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

    def memory_directive(self, spec: JobScriptSpec) -> str | None:
        """The header line asking for ``spec.mem_kb`` of memory (None: this scheduler takes none)."""
        return None

    @abstractmethod
    def cores_per_node_commands(self, spec: JobScriptSpec) -> list[str]:
        """Shell lines that export ``EXPYRE_NUM_CORES_PER_NODE`` inside the running job."""

    def render_header(self, spec: JobScriptSpec) -> list[str]:
        """The script's directive lines, placeholders filled in (the default header first)."""
        fields = spec.fields()
        header = list(spec.header)
        if not spec.no_default_header:
            memory = self.memory_directive(spec) if spec.mem_kb else None
            header = self.default_header() + ([memory] if memory else []) + header
        return [self._format_line(line, fields) for line in header]

    def render_script(self, spec: JobScriptSpec) -> str:
        """The whole job script: header directives, ExPyRe's ``EXPYRE_NUM_*`` variables, body."""
        header_text = self.render_header(spec)
        commands = [
            # when the job started, before anything it runs: a packed worker counts its time left from it
            f"export {JOB_STARTED_ENV}=$(date +%s)",
            *self.cores_per_node_commands(spec),
            f"export EXPYRE_NUM_NODES={spec.num_nodes}",
            f"export EXPYRE_NUM_CORES={spec.num_cores}",
            # the time this job was given (an escalated rerun gets more): code may pace itself by it
            f"export WFL_ASYNC_MAX_TIME={int(spec.max_time)}",
            # ExPyRe's older spellings, used in wfl's documentation (EXPYRE_NCORES_PER_NODE)
            "export EXPYRE_NCORES_PER_NODE=$EXPYRE_NUM_CORES_PER_NODE",
            f"cd {shlex.quote(spec.job_dir)}",
            *spec.commands,
        ]
        return "#!" + spec.script_exec + "\n" + "\n".join(header_text) + "\n\n" + "\n".join(commands) + "\n"

    @staticmethod
    def _format_line(line: str, fields: Mapping[str, object]) -> str:
        """Fill ``{name}`` placeholders; only plain names of ``fields`` (no ``{id.attr}``, ``{0}``).

        :raises ConfigurationError: the line (a config.json ``header`` entry) is not a template of those names
        """
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(line) if name is not None]
        except ValueError as exc:
            raise ConfigurationError(
                f"header line {line!r} is not a valid template ({exc}); placeholders are "
                f"{sorted(fields)}, written as {{name}}; write literal braces as '{{{{' and '}}}}'"
            ) from exc
        for name in names:
            if name not in fields:
                raise ConfigurationError(
                    f"header line {line!r} uses placeholder {name!r} which is not one of "
                    f"{sorted(fields)}; fix the 'header' entry in config.json (write literal braces as '{{{{')"
                )
        try:
            return line.rstrip().format(**fields)
        except (ValueError, TypeError) as exc:  # e.g. a format spec that does not fit the value
            raise ConfigurationError(f"header line {line!r} cannot be filled in: {exc}; fix the 'header' entry "
                                     f"in config.json") from None

    # ---------------------------------------------------------------- submit
    def submit_command(self, job_dirs: Sequence[str], indices: Sequence[int] | None = None) -> str:
        """One shell command that submits the job script in each of ``job_dirs``.

        For each directory, in order, it prints a record: a line ``index<TAB>exit status<TAB>``
        followed by the submit program's output, then a line :data:`SUBMIT_RECORD_END`, so one
        failed submission does not hide the rest and each record can be read as it arrives.
        ``indices`` (default 0, 1, ...) number the records: their places in the whole batch.
        """
        # Exactly once, even when the scheduler's answer is lost: see wfl_async.scheduler.submit_lock.
        # The records are held and written once a second (the first at once), not one write each: a
        # write each was an ssh packet the driver woke for by itself, job by job at the submit
        # program's pace (issue 16: a third of the driver's CPU a job); a record lost with the
        # connection is found through its job directory's kept answer, as any.
        return (f"{self.unset_env_command()}{SET_HOST} {_HELD_RECORDS} {_for_each_dir(job_dirs, indices)} "
                f"{submit_once(self.submit_invocation(), _HELD_RECORD)} {_RECORDS_EACH_SECOND} done; "
                f"printf %s \"$wfl_rec\"")

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
        """The script of an array submission: ``spec``'s header (every task of an array has the same,
        with the array's name), then :func:`~wfl_async.scheduler.arrays.task_body`: each task runs the
        job script of its own job directory, listed in ``array_dir``'s task list."""
        body = arrays.task_body(self.array_index_variable, self.first_array_index, array_dir, spec.script_exec,
                                self.script_name)
        return "#!" + spec.script_exec + "\n" + "\n".join(self.render_header(spec)) + "\n\n" + "\n".join(body) + "\n"

    def array_submit_command(self, array_dir: str, script: str, job_dirs: Sequence[str],
                             indices: Sequence[int]) -> str:
        """One shell command submitting ``job_dirs`` as tasks of one array (``script`` from
        :meth:`render_array_script`), printing the same records as :meth:`submit_command`
        (see :func:`~wfl_async.scheduler.arrays.submit_command`)."""
        if not self.supports_arrays:
            raise SchedulerError(f"the {self.name} scheduler cannot submit job arrays")
        return arrays.submit_command(
            prelude=f"{self.unset_env_command()}{SET_HOST} {SET_HOLDER}", array_dir=array_dir, script=script,
            script_name=self.script_name, submit=f"{self.submit_program} {self.array_option}",
            first_index=self.first_array_index, each_dir=_for_each_dir(job_dirs, indices), record=_RECORD)

    def with_array_tasks(self, find: str) -> str:
        """``find`` (printing ``<id> <working directory>``), each array's line replaced by its tasks, so a
        task whose submission's answer was lost is found (:func:`~wfl_async.scheduler.arrays.listing_with_tasks`)."""
        return arrays.listing_with_tasks(find, self.first_array_index)

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
        task, output = arrays.split_task_answer(output)
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

    listing_by_line: ClassVar[bool] = False
    """Each line of :meth:`status_command`'s output names its jobs by itself, whatever the other lines
    say: a poll then parses only the lines that changed since its last listing (system/listing.py)."""

    memory_kill_text: ClassVar[str | None] = None
    """What the scheduler writes to a job's stderr when it kills it for its memory, where its
    accounting records only the signal (Slurm's OverMemoryKill: ``FAILED 0:9``)."""

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
            task = arrays.parse_found_task(line)
            if task is not None:
                array_id, index, workdir = task
                found[workdir.strip().rstrip("/")] = self.array_task_id(array_id, index)
                continue
            remote_id, _, workdir = line.strip().partition(" ")
            if remote_id and workdir:
                found[workdir.strip().rstrip("/")] = remote_id
        return found

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


_RECORD = f"printf '%d\\t%d\\t%s\\n{SUBMIT_RECORD_END}\\n' \"$i\" \"$rc\" \"$out\";"
"""Shell text printing the record of job ``$i``: index, exit status, output."""
_HELD_RECORDS = "wfl_rec=; wfl_sent=; wfl_tab=$(printf '\\t'); wfl_nl=$(printf '\\nx'); wfl_nl=${wfl_nl%x};"
"""Shell text starting the records held (none), with a tab and a newline to write them (the command itself has
neither: it is one line to the remote shell)."""
_HELD_RECORD = f'wfl_rec="$wfl_rec$i$wfl_tab$rc$wfl_tab$out$wfl_nl{SUBMIT_RECORD_END}$wfl_nl";'
"""Shell text adding the record of job ``$i`` (as :data:`_RECORD` prints it) to those held in ``$wfl_rec``."""
_RECORDS_EACH_SECOND = ('wfl_now=$(date +%s); if [ "$wfl_now" != "$wfl_sent" ]; then printf %s "$wfl_rec"; '
                        'wfl_rec=; wfl_sent=$wfl_now; fi;')
"""Shell text writing the records held in ``$wfl_rec`` unless they were written less than a second ago."""


def _for_each_dir(job_dirs: Sequence[str], indices: Sequence[int] | None) -> str:
    """Shell text starting a loop that sets ``$i`` (the record's index) and ``$d`` (the directory)."""
    numbers = range(len(job_dirs)) if indices is None else indices
    pairs = " ".join(shlex.quote(f"{i}:{d}") for i, d in zip(numbers, job_dirs, strict=True))
    return f'for e in {pairs}; do i=${{e%%:*}}; d=${{e#*:}};'
