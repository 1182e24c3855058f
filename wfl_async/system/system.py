"""One configured machine: transport + scheduler + partitions + run directory.

A system turns many concurrent job coroutines into few remote round trips. Jobs never
run remote commands themselves. A request travels like this:

* :meth:`System.submit` hands a :class:`~wfl_async.system.requests.SubmitRequest` to the
  system's :class:`~wfl_async.system.submit_loop.SubmitLoop`, which stages and submits
  many jobs in one command (:mod:`wfl_async.system.submit` builds it, the scheduler's
  ``submit_command`` loops over the job directories remotely);
* :meth:`System.wait` hands a :class:`~wfl_async.system.requests.Watch` to the system's
  :class:`~wfl_async.system.poll_loop.PollLoop`, which asks about every watched job in one
  command per poll (:meth:`System.survey`) and fetches the finished ones in one stream;
* both commands go through the system's :class:`~wfl_async.transport.base.Transport`
  (a subprocess, or a channel on the host's one ssh connection).

:meth:`System.serve` (started by the session, in its task group, ended when the session
closes) runs the two loops. The rest of this class answers one-command questions (the
queue listing, markers, cancel/hold/release, removing directories) for the loops and
for the command line, and knows the system's partitions and remote run directory.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from typing import Any, Protocol

import anyio
import anyio.abc

from ..config.expyre_modules import expyre_module
from ..config.system_config import SystemConfig
from ..errors import ConfigurationError, RemoteCommandError, SchedulerError, TransportError
from ..jobs.states import QueueState, Verdict
from ..scheduler.base import Accounted, Scheduler
from ..transport.base import Transport
from .commands import QUEUE_END, dir_list, marker_command, parse_event_log, parse_markers
from .poll_loop import PollLoop, PollRecord
from .problems import rundir_problem
from .rate import scheduler_limiter
from .requests import JobOutcome, QueueSurvey, SubmitRequest, Watch
from .submit import scheduler_prefix
from .submit_loop import SubmitLoop
from .window import QueueWindow

__all__ = ["CONTROL_IDS", "ProgressCallback", "SubmittedCallback", "System"]

log = logging.getLogger(__name__)

CONTROL_IDS = 500
"""Job ids per cancel/hold/release command (ids go on the command line; 500 stay far below its cap)."""

ProgressCallback = Callable[[Sequence[tuple[Watch, Verdict]]], Awaitable[None]]
"""Called once per poll with the jobs whose state moved, and their verdicts."""
SubmittedCallback = Callable[[SubmitRequest, str], None]
"""Called (synchronously) as each job is accepted, with its remote root."""


class SurveyExtension(Protocol):
    """Something the survey command also asks about, in the same round trip (packing's queues).

    ``shell`` is run between the queue listing and the markers and ends its output with
    ``end``; ``states`` gets that output and the scheduler's states, and returns the states
    the jobs are classified by (e.g. with packed chunks added).
    """

    end: str

    def survey_shell(self, root: str) -> str: ...

    def survey_states(self, root: str, text: str,
                      states: dict[str, QueueState] | None) -> dict[str, QueueState] | None: ...


class System:
    """A machine jobs run on. Shared by every coroutine using it; see the module docstring."""

    def __init__(self, config: SystemConfig, transport: Transport, scheduler: Scheduler, project: str, *,
                 batch_window: float = 0.05, max_batch_wait: float = 1.0) -> None:
        self.config = config
        self.transport = transport
        self.scheduler = scheduler
        self.project = project
        self.batch_window = batch_window
        self.max_batch_wait = max_batch_wait
        self.stats = {"submit_commands": 0, "poll_commands": 0, "fetch_commands": 0, "scheduler_calls": 0,
                      "submit_retries": 0, "marker_scans": 0, "queue_listings": 0,
                      "scheduler_submissions": 0}
        self.window = QueueWindow(config.max_queued_jobs)
        """Room for ``max_queued_jobs`` of this driver's jobs in the queue (:mod:`.window`)."""
        self._limiter = scheduler_limiter(config.scheduler_rate, config.scheduler_burst)
        self.on_progress: ProgressCallback | None = None
        self.on_submitted: SubmittedCallback | None = None
        self.survey_extension: SurveyExtension | None = None
        """Asked in every survey (set by the session: the packing coordinator)."""
        self._submitter = SubmitLoop(self)
        self._poller = PollLoop(self)
        self._tasks: anyio.abc.TaskGroup | None = None
        self._remote_root: str | None = None
        self._root_lock = anyio.Lock()

    def __repr__(self) -> str:
        return (f"<System {self.config.name} [{self.config.scheduler} via {self.transport.where} | "
                f"pending submit: {self._submitter.pending} | watched: {self.watched_count()}]>")

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def serving(self) -> bool:
        return self._tasks is not None

    def watched_count(self) -> int:
        """Jobs submitted and not yet seen to finish."""
        return self._poller.watched_count()

    def running_count(self) -> int:
        """Watched jobs whose worker has started."""
        return sum(1 for w in self._poller.watches.values() if w.started)

    def array_count(self, job_dirs: Collection[str]) -> int:
        """How many job arrays the watched jobs of ``job_dirs`` are tasks of (for a call's progress line)."""
        watches = self._poller.watches
        return len({parent for d in job_dirs if (w := watches.get(d)) is not None and w.remote_id
                    and (parent := self.scheduler.array_parent_id(w.remote_id)) is not None})

    def started_count(self, job_dirs: Collection[str]) -> int:
        """How many of ``job_dirs`` are watched and started (one call's running jobs, for its progress line)."""
        watches = self._poller.watches
        return sum(1 for d in job_dirs if (w := watches.get(d)) is not None and w.started)

    def waiting_count(self, job_dirs: Collection[str] | None = None) -> int:
        """Jobs (of ``job_dirs``, default all) waiting locally for room in the queue window."""
        return self._submitter.waiting_count(job_dirs)

    def scheduler_call_free(self) -> bool:
        """A scheduler call could go now without waiting, and leave a token for a caller that waits.

        For calls that may be skipped (a poll's queue listing): under a tight rate limit they
        give way to the ones that must go (submissions), and never wait for a token themselves.
        """
        if self._limiter is None:
            return True
        return self._limiter.has_capacity(min(2.0, self._limiter.max_rate))

    def submitting_count(self) -> int:
        """Jobs whose submission command is running now (a closing session waits for them)."""
        return self._submitter.in_flight

    async def scheduler_call(self) -> None:
        """Count one scheduler call, waiting for a token of the system's rate limit first (:mod:`.rate`)."""
        if self._limiter is not None:
            await self._limiter.acquire()
        self.stats["scheduler_calls"] += 1

    # ------------------------------------------------------------------ the loops
    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the submit loop and the poll loop until cancelled (the session does both)."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            tasks.start_soon(self._submitter.run, tasks)
            tasks.start_soon(self._poller.run)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tasks = None

    def _check_serving(self) -> None:
        if self._tasks is None:
            raise RuntimeError(f"system {self.name!r} is not being served: use it through a session "
                               f"(wfl_async.session.session_scope)")

    async def submit(self, request: SubmitRequest) -> str:
        """Stage and submit one job as part of the next batch; return its queue id.

        Cancelling the caller only stops its wait: the job is still submitted, and recorded.

        :raises SchedulerError: the scheduler refused this job (not for transient errors, which
            are retried)
        """
        self._check_serving()
        return await self._submitter.submit(request)

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``func(*args)`` in the system's task group (ended with the session); a no-op when not served."""
        if self._tasks is not None:
            self._tasks.start_soon(func, *args)

    async def wait(self, watch: Watch) -> JobOutcome:
        """Wait until ``watch``'s job has a final marker (its files fetched) or has died.

        Cancellation (including a caller's timeout) leaves the job queued and resumable.
        """
        self._check_serving()
        return await self._poller.wait(watch)

    def poll_interval(self) -> float:
        """Seconds between two polls of this system now."""
        return self._poller.interval()

    def poll_history(self) -> list[PollRecord]:
        """This system's last polls, oldest first (see :class:`~wfl_async.system.poll_loop.PollRecord`)."""
        return list(self._poller.history)

    # ------------------------------------------------------------------ resources
    def select_partition(self, resources: dict[str, Any], *, exact_fit: bool = True,
                         partial_node: bool = False) -> tuple[str, dict[str, int], int]:
        """Partition, node counts and max time (s) for ``resources`` (ExPyRe ``Resources`` keys).

        :raises ConfigurationError: the resources are malformed or no partition fits them
        """
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
        spec = self.config.partitions[partition]
        max_time = res.max_time if res.max_time is not None else (spec.get("max_time") or 24 * 3600)
        return spec.get("partition", partition), node_dict, int(max_time)

    # ------------------------------------------------------------------ paths
    async def remote_root(self) -> str:
        """Absolute directory holding this project's job directories (created on first use).

        A leading ``~/`` is the home directory on the system; a relative rundir is relative to
        it too (where a login shell starts), never to the driver's current directory.
        """
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
    async def accounting(self, remote_ids: Sequence[str]) -> dict[str, Accounted]:
        """How jobs the queue no longer lists ended, by the scheduler's accounting (``sacct``), in
        one command; {} when it keeps none or cannot be asked (then the jobs wait out their grace)."""
        command = self.scheduler.accounting_command(remote_ids) if remote_ids else None
        if command is None:
            return {}
        await self.scheduler_call()
        try:
            result = await self.transport.run(f"( {self.scheduler_prefix()}{command} ) </dev/null", check=False,
                                              kind="poll", retry=True)
        except TransportError as exc:
            log.info("%s: could not read the scheduler's accounting (%s)", self.name, exc)
            return {}
        return self.scheduler.parse_accounting_output(result.stdout.decode(errors="replace"))

    async def survey(self, job_dirs: Sequence[str], root: str | None = None, *,
                     events_from: int | None | bool = False, queue: bool = True) -> QueueSurvey:
        """In ONE command: the scheduler's listing of the user's jobs, and the markers in ``job_dirs``.

        ``job_dirs`` go on the command's stdin, so any number of them costs one short command.
        A failing status command gives ``states=None`` (logged), never an error: a job is not
        called died because its scheduler could not answer.

        :param root: remote directory holding ``job_dirs`` (default: this project's)
        :param events_from: also read the run's event log from this byte offset (None: its
            size only; False: not at all); see :func:`~wfl_async.system.commands.event_log_command`
        :param queue: also list the queue (a scheduler call, rate limited); False: ``states`` is None
        :raises SchedulerError: ``root`` cannot be entered (the jobs' directories are gone)
        """
        root = root or await self.remote_root()
        extension = self.survey_extension if queue else None  # it judges workers by the queue listing
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
        if not queue:
            states = None
        elif status_rc.strip() != "0":
            log.warning("%s: status command failed (%s); jobs are taken as still active: %s", self.name,
                        self.scheduler.classify_error(queue_text) or "not a known transient error",
                        queue_text.strip()[-500:])
            states = None
        else:
            states = self.scheduler.parse_status_output(queue_text)
        markers = parse_markers(marker_text, root, self.name)
        if extension is not None:
            states = extension.survey_states(root, extra_text, states)
        events = None if events_from is False else parse_event_log(result.stdout)
        return QueueSurvey(states, queue_text, markers, events)

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

