"""One configured machine as the loops see it: its parts, its paths and its one-command questions.

A :class:`Machine` is what every loop of a system (submit, poll, fetch, packing) is given at
construction, instead of the whole :class:`~wfl_async.system.System`: the configuration, the
scheduler (pure: command text and parsers), the transport, the remote run directory, the
scheduler's rate limit and the counters. None of it knows about the loops, so a loop can be
read (and driven in a unit test, with a scripted transport) knowing only this class.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from ..config.expyre_modules import expyre_module
from ..config.system_config import SystemConfig
from ..errors import ConfigurationError, RemoteCommandError, SchedulerError, TransportError
from ..jobs.states import QueueState
from ..scheduler.base import Accounted, Scheduler
from ..transport.base import Transport
from .commands import QUEUE_END, dir_list, marker_command, parse_event_log, parse_markers
from .listing import ListingDiff
from .problems import rundir_problem
from .rate import scheduler_limiter
from .requests import QueueSurvey
from .submit import scheduler_prefix

__all__ = ["CONTROL_IDS", "Limits", "Machine", "SurveyExtension"]

log = logging.getLogger(__name__)

_MEMORY_PROBE = "@@wfl_async_memory_kills@@"
"""Separates the accounting's output from the list of job directories whose stderr names a memory kill."""

CONTROL_IDS = 500
"""Job ids per cancel/hold/release command (ids go on the command line; 500 stay far below its cap)."""


@dataclass(frozen=True)
class Limits:
    """A job's memory request and the most its partition allows (:meth:`Machine.limits`)."""

    max_time: int | None
    """The partition's time limit (s); None: config.json sets none."""
    max_mem_kb: int | None
    """The partition's memory for the job's nodes (kB); None: config.json sets none."""
    mem_kb: int | None
    """What the job asks for (kB, all its nodes); None: no memory request (the scheduler's default)."""


class SurveyExtension(Protocol):
    """Something a survey also asks about, in the same round trip (packing's queues).

    ``shell`` is run between the queue listing and the markers and ends its output with
    ``end``; ``states`` gets that output and the scheduler's states, and returns the states
    the jobs are classified by (e.g. with packed chunks added). Both only read.
    """

    end: str

    def survey_shell(self, root: str) -> str: ...

    def survey_states(self, root: str, text: str,
                      states: dict[str, QueueState] | None) -> MutableMapping[str, QueueState] | None: ...

    def accounted(self, remote_id: str) -> Accounted | None:
        """How a job the scheduler never listed (a packed chunk) ended, where the extension knows."""


class Machine:
    """A machine jobs run on: config, scheduler, transport, run directory, rate limit, counters."""

    def __init__(self, config: SystemConfig, transport: Transport, scheduler: Scheduler, project: str) -> None:
        self.config = config
        self.transport = transport
        self.scheduler = scheduler
        self.project = project
        self.stats = {"submit_commands": 0, "poll_commands": 0, "fetch_commands": 0, "scheduler_calls": 0,
                      "submit_retries": 0, "marker_scans": 0, "queue_listings": 0,
                      "scheduler_submissions": 0}
        self._limiter = scheduler_limiter(config.scheduler_rate, config.scheduler_burst)
        self._remote_root: str | None = None
        self._root_lock = anyio.Lock()
        self._fits: dict[tuple[str, bool, bool], tuple[Any, str, dict[str, int]]] = {}
        self._limits: dict[tuple[str, bool, bool], Limits] = {}

    @property
    def name(self) -> str:
        return self.config.name

    # ------------------------------------------------------------------ the scheduler's rate limit
    def scheduler_call_free(self) -> bool:
        """A scheduler call could go now without waiting, and leave a token for a caller that waits.

        For calls that may be skipped (a poll's queue listing): under a tight rate limit they
        give way to the ones that must go (submissions), and never wait for a token themselves.
        """
        if self._limiter is None:
            return True
        return self._limiter.has_capacity(min(2.0, self._limiter.max_rate))

    async def scheduler_call(self) -> None:
        """Count one scheduler call, waiting for a token of the system's rate limit first (:mod:`.rate`)."""
        if self._limiter is not None:
            await self._limiter.acquire()
        self.stats["scheduler_calls"] += 1

    # ------------------------------------------------------------------ resources
    def select_partition(self, resources: dict[str, Any], *, exact_fit: bool = True,
                         partial_node: bool = False) -> tuple[str, dict[str, int], int]:
        """Partition, node counts and max time (s) for ``resources`` (ExPyRe ``Resources`` keys).

        :raises ConfigurationError: the resources are malformed or no partition fits them
        """
        res, partition, node_dict = self._fit(resources, exact_fit, partial_node)
        spec = self.config.partitions[partition]
        max_time = res.max_time if res.max_time is not None else (spec.get("max_time") or 24 * 3600)
        return spec.get("partition", partition), node_dict, int(max_time)

    def limits(self, resources: dict[str, Any], *, exact_fit: bool = True, partial_node: bool = False) -> Limits:
        """The memory ``resources`` ask for and the most time and memory their partition allows
        (config.json ``partitions``): how far an escalation after a kill may go (one object for every
        job asking the same)."""
        key = _fit_key(resources, exact_fit, partial_node)
        if (shared := self._limits.get(key)) is not None:
            return shared
        res, partition, node_dict = self._fit(resources, exact_fit, partial_node)
        spec = self.config.partitions[partition]
        node_mem = spec.get("max_mem")
        asked = None
        if res.max_mem is not None:
            amount, per = res.max_mem
            asked = int(amount * node_dict["num_cores"] if per == "per_core" else amount)
        limits = self._limits[key] = Limits(
            max_time=int(spec["max_time"]) if spec.get("max_time") else None,
            max_mem_kb=int(node_mem * node_dict["num_nodes"]) if node_mem else None, mem_kb=asked)
        return limits

    def _fit(self, resources: dict[str, Any], exact_fit: bool, partial_node: bool) -> tuple[Any, str, dict[str, int]]:
        """ExPyRe's ``Resources`` of ``resources``, and the partition (config.json's key) and nodes it fits;
        worked out once per set of resources (every chunk of a call asks the same, twice)."""
        key = _fit_key(resources, exact_fit, partial_node)
        if key not in self._fits:
            self._fits[key] = self._fit_afresh(resources, exact_fit, partial_node)
        return self._fits[key]  # one node dict shared by every job asking (read only: 10^5 chunks may wait)

    def _fit_afresh(self, resources: dict[str, Any], exact_fit: bool,
                    partial_node: bool) -> tuple[Any, str, dict[str, int]]:
        resources_cls = expyre_module("resources").Resources
        try:
            res = resources_cls(**resources)
            partition, node_dict = res.find_nodes(self.config.partitions, exact_fit=exact_fit,
                                                  partial_node=partial_node)
        except TypeError as exc:
            raise ConfigurationError(f"bad resources {resources!r} for system {self.name!r}: {exc}. Valid keys: "
                                     f"max_time, num_nodes or num_cores, max_mem_tot or max_mem_per_core, "
                                     f"partitions") from exc
        except (RuntimeError, ValueError) as exc:
            raise ConfigurationError(
                f"no partition of system {self.name!r} fits resources {resources!r} "
                f"(exact_fit={exact_fit}, partial_node={partial_node}): {exc}. Partitions: "
                f"{ {k: {kk: v.get(kk) for kk in ('num_cores', 'max_time', 'max_mem')} for k, v in self.config.partitions.items()} }. "
                f"Ask for fewer cores/time/memory, set partial_node=True, or exact_fit=False.") from exc
        return res, partition, node_dict

    # ------------------------------------------------------------------ paths
    async def remote_root(self) -> str:
        """Absolute directory holding this project's job directories (created on first use).

        A leading ``~/`` is the home directory on the system; a relative rundir is relative to
        it too (where a login shell starts), never to the driver's current directory.
        """
        if self._remote_root is not None:  # every chunk asks: no lock (and no checkpoint) once known
            return self._remote_root
        async with self._root_lock:
            if self._remote_root is None:
                where = self.rundir_shell()
                try:
                    result = await self.transport.run(f"mkdir -p {where} && cd {where} && pwd -P", kind="probe",
                                                      retry=True)
                except RemoteCommandError as exc:
                    detail = exc.stderr.decode(errors="replace") or f"exit status {exc.returncode}"
                    raise ConfigurationError(str(rundir_problem(self.name, self.rundir_path(), detail))) from exc
                self._remote_root = result.stdout.decode().strip().splitlines()[-1]
            return self._remote_root

    def rundir_path(self) -> str:
        """``<rundir>/<project>`` as configured, for messages (``~/`` and relative: the remote home)."""
        rundir = self.config.rundir or ("run_wfl_async" if self.config.host else "~/.wfl_async/run")
        return f"{rundir.rstrip('/')}/{self.project}"

    def rundir_shell(self) -> str:
        """:meth:`rundir_path` as one quoted shell word; a relative path is made relative to ``$HOME``."""
        target = self.rundir_path()
        if target.startswith("~/"):
            target = target[2:]
        return shlex.quote(target) if target.startswith("/") else f"\"$HOME\"/{shlex.quote(target)}"

    def scheduler_prefix(self) -> str:
        """``pre_submit_cmds`` run before every scheduler command (submit, status, cancel)."""
        return scheduler_prefix(self.config)

    # ------------------------------------------------------------------ questions
    async def survey(self, job_dirs: Sequence[str], root: str | None = None, *,
                     events_from: int | None | bool = False, queue: bool = True,
                     extension: SurveyExtension | None = None, listing: ListingDiff | None = None) -> QueueSurvey:
        """In ONE command: the scheduler's listing of the user's jobs, and the markers in ``job_dirs``.

        ``job_dirs`` go on the command's stdin, so any number of them costs one short command.
        A failing status command gives ``states=None`` (logged), never an error: a job is not
        called died because its scheduler could not answer.

        :param root: remote directory holding ``job_dirs`` (default: this project's)
        :param events_from: also read the run's event log from this byte offset (None: its
            size only; False: not at all); see :func:`~wfl_async.system.commands.event_log_command`
        :param queue: also list the queue (a scheduler call, rate limited); False: ``states`` is None
        :param extension: also asked, in the same command, when the queue is listed (it judges
            by the listing): packing's queues
        :param listing: the last listing of this root's polls: only the lines that changed are
            parsed, and the survey says which ids they name (:attr:`QueueSurvey.changed`)
        :raises SchedulerError: ``root`` cannot be entered (the jobs' directories are gone)
        """
        root = root or await self.remote_root()
        extension = extension if queue else None
        extra = f"{extension.survey_shell(root)} </dev/null; " if extension is not None else ""
        status = f"( {self.scheduler_prefix()}{self.scheduler.status_command()} ) </dev/null 2>&1; " if queue else ""
        command = f"{status}echo \"{QUEUE_END} $?\"; {extra}{marker_command(root, events_from=events_from)}"
        if queue:
            await self.scheduler_call()
            self.stats["queue_listings"] += 1
        result = await self.transport.run(command, stdin=dir_list(job_dirs), check=False, kind="poll", retry=True)
        queue_text, _, rest = result.stdout.decode(errors="replace").partition(QUEUE_END)
        status_rc, _, marker_text = rest.partition("\n")
        extra_text = ""
        if extension is not None:
            extra_text, _, marker_text = marker_text.partition(extension.end)
        markers = parse_markers(marker_text, root, self.name)  # (first: a root that is gone reads no listing)
        states: MutableMapping[str, QueueState] | None
        changed: set[str] | None = None
        if not queue:
            states = None
        elif status_rc.strip() != "0":
            if listing is not None:
                listing.lost()
            log.warning("%s: status command failed (%s); jobs are taken as still active: %s", self.name,
                        self.scheduler.classify_error(queue_text) or "not a known transient error",
                        queue_text.strip()[-500:])
            states = None
        elif listing is not None:
            states, changed = listing.parse(queue_text)
        else:
            states = self.scheduler.parse_status_output(queue_text)
        if extension is not None:
            states = extension.survey_states(root, extra_text, states)
        events = None if events_from is False else parse_event_log(result.stdout)
        return QueueSurvey(states, queue_text, markers, events, changed)

    async def accounting(self, jobs: Mapping[str, str]) -> dict[str, Accounted]:
        """How jobs the queue no longer lists ended, by the scheduler's accounting (``sacct``, ``qacct``),
        all in ONE command; {} when it keeps none or cannot be asked (then the jobs wait out their grace).

        :param jobs: remote id -> the job's absolute directory. Where the scheduler records a kill for
            memory only as a signal (:attr:`~wfl_async.scheduler.base.Scheduler.memory_kill_text`), the
            same command looks for its words in those directories' stderr files
        """
        command = self.scheduler.accounting_command(sorted(jobs)) if jobs else None
        if command is None:
            return {}
        probe = self.scheduler.memory_kill_text
        if probe:
            dirs = " ".join(shlex.quote(d) for d in sorted(set(jobs.values())))
            command += (f"; echo {_MEMORY_PROBE}; for d in {dirs}; do grep -qsF {shlex.quote(probe)} \"$d\"/*.stderr "
                        f"&& printf '%s\\n' \"$d\"; done; true")
        await self.scheduler_call()
        try:
            result = await self.transport.run(f"( {self.scheduler_prefix()}{command} ) </dev/null", check=False,
                                              kind="poll", retry=True)
        except TransportError as exc:
            log.info("%s: could not read the scheduler's accounting (%s)", self.name, exc)
            return {}
        text, _, probed = result.stdout.decode(errors="replace").partition(f"{_MEMORY_PROBE}\n")
        found = self.scheduler.parse_accounting_output(text)
        over_memory = {line.strip().rstrip("/") for line in probed.splitlines() if line.strip()}
        for remote_id, ended in found.items():
            if ended.killed and jobs.get(remote_id, "").rstrip("/") in over_memory:
                found[remote_id] = ended.memory_killed(self.scheduler.name)
        return found

    async def control(self, action: str, remote_ids: Sequence[str]) -> None:
        """Cancel, hold or release jobs: one scheduler command per :data:`CONTROL_IDS` jobs."""
        if not remote_ids:
            return
        builders = {"cancel": self.scheduler.cancel_command, "hold": self.scheduler.hold_command,
                    "release": self.scheduler.release_command}
        ids = list(remote_ids)
        for start in range(0, len(ids), CONTROL_IDS):  # bounded commands, whatever the number of jobs
            some = ids[start:start + CONTROL_IDS]
            await self.scheduler_call()
            try:
                await self.transport.run(f"{self.scheduler_prefix()}{builders[action](some)}", kind="cancel")
            except RemoteCommandError as exc:
                raise SchedulerError(f"{self.name}: {action} of {some} failed: {exc}") from exc

    async def queue_states(self) -> dict[str, QueueState]:
        """The scheduler's view of every job of this user (one command)."""
        await self.scheduler_call()
        result = await self.transport.run(f"{self.scheduler_prefix()}{self.scheduler.status_command()}", kind="poll",
                                          retry=True)
        return self.scheduler.parse_status_output(result.stdout.decode(errors="replace"))

    async def markers(self, job_dirs: Sequence[str], root: str | None = None) -> dict[str, str]:
        """Which of ``job_dirs`` hold a started/final marker (one command)."""
        if not job_dirs:
            return {}
        root = root or await self.remote_root()
        result = await self.transport.run(marker_command(root), stdin=dir_list(job_dirs), kind="poll", retry=True)
        return parse_markers(result.stdout.decode(errors="replace"), root, self.name)

    async def remove_dirs(self, job_dirs: Sequence[str], root: str | None = None) -> None:
        """Delete job directories on the system (one command); a root that is gone holds none."""
        if not job_dirs:
            return
        root = root or await self.remote_root()
        # names on stdin (any number); rm -rf is safe to repeat after a dropped connection
        await self.transport.run(f"cd {shlex.quote(root)} 2>/dev/null || exit 0; xargs -d '\\n' -r rm -rf --",
                                 stdin=dir_list(job_dirs), kind="cancel", retry=True)


def _fit_key(resources: dict[str, Any], exact_fit: bool, partial_node: bool) -> tuple[str, bool, bool]:
    """What a fit of ``resources`` depends on (the key of :meth:`Machine._fit`'s and :meth:`Machine.limits`' caches)."""
    return repr(sorted(resources.items())), exact_fit, partial_node
