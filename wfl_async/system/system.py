"""One configured machine with its loops: a :class:`~.machine.Machine`, a submit loop, a poll loop.

A system turns many concurrent job coroutines into few remote round trips. Jobs never
run remote commands themselves. A request travels like this:

* :meth:`System.submit` hands a :class:`~wfl_async.system.requests.SubmitRequest` to the
  system's :class:`~wfl_async.system.submit_loop.SubmitLoop`, which stages and submits
  many jobs in one command (:mod:`wfl_async.system.submit` builds it, the scheduler's
  ``submit_command`` loops over the job directories remotely);
* :meth:`System.wait` hands a :class:`~wfl_async.system.requests.Watch` to the system's
  :class:`~wfl_async.system.poll_loop.PollLoop`, which asks about every watched job in one
  command per poll (:meth:`Machine.survey <wfl_async.system.machine.Machine.survey>`) and
  fetches the finished ones in one stream;
* both commands go through the system's :class:`~wfl_async.transport.base.Transport`
  (a subprocess, or a channel on the host's one ssh connection).

Each loop is built here with what it needs and nothing more: the :class:`~.machine.Machine`
(config, scheduler, transport, run directory, rate limit, counters), the system's
:class:`~.window.QueueWindow`, and the :class:`~.recorder.Recorder` it reports to. None of
them sees this class. :meth:`System.serve` (started by the session, in its task group,
ended when the session closes) runs the two loops. The one-command questions (the queue
listing, markers, cancel/hold/release, removing directories) are the machine's, offered here
for the command line.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

import anyio
import anyio.abc

from ..config.system_config import SystemConfig
from ..errors import LoopStoppedError, first_failure
from ..jobs.states import QueueState
from ..scheduler.base import Scheduler
from ..transport.base import Transport
from .machine import CONTROL_IDS, Limits, Machine, SurveyExtension
from .poll_loop import PollLoop, PollRecord
from .recorder import NO_RECORDER, Recorder
from .requests import JobOutcome, QueueSurvey, SubmitRequest, Watch
from .submit_loop import SubmitLoop
from .window import QueueWindow

__all__ = ["CONTROL_IDS", "System"]

log = logging.getLogger(__name__)


class System:
    """A machine jobs run on, with its loops. Shared by every coroutine using it; see the module docstring."""

    def __init__(self, config: SystemConfig, transport: Transport, scheduler: Scheduler, project: str, *,
                 recorder: Recorder = NO_RECORDER, survey_extension: SurveyExtension | None = None,
                 batch_window: float = 0.05, max_batch_wait: float = 1.0) -> None:
        self.machine = Machine(config, transport, scheduler, project)
        self.window = QueueWindow(config.max_queued_jobs)
        """Room for ``max_queued_jobs`` of this driver's jobs in the queue (:mod:`.window`)."""
        self.survey_extension = survey_extension
        """Asked in every survey that lists the queue (the session gives packing's queue listing)."""
        self._poller = PollLoop(self.machine, self.window, recorder, extension=survey_extension)
        self._submitter = SubmitLoop(self.machine, self.window, recorder, watched=self._poller.watched_count,
                                     batch_window=batch_window, max_batch_wait=max_batch_wait)
        self._serving = False
        self.stopped_by: LoopStoppedError | None = None
        """Set when the loops stopped on an unexpected error (:meth:`serve`): every later use raises it."""

    def __repr__(self) -> str:
        return (f"<System {self.config.name} [{self.config.scheduler} via {self.transport.where} | "
                f"pending submit: {self._submitter.pending} | watched: {self.watched_count()}]>")

    # ------------------------------------------------------------------ the machine's parts
    @property
    def config(self) -> SystemConfig:
        return self.machine.config

    @property
    def transport(self) -> Transport:
        return self.machine.transport

    @property
    def scheduler(self) -> Scheduler:
        return self.machine.scheduler

    @property
    def project(self) -> str:
        return self.machine.project

    @property
    def stats(self) -> dict[str, int]:
        return self.machine.stats

    @property
    def name(self) -> str:
        return self.machine.name

    @property
    def serving(self) -> bool:
        return self._serving

    # ------------------------------------------------------------------ counts (progress line)
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

    def submitting_count(self) -> int:
        """Jobs whose submission command is running now (a closing session waits for them)."""
        return self._submitter.in_flight

    def waiting_count(self, job_dirs: Collection[str] | None = None) -> int:
        """Jobs (of ``job_dirs``, default all) waiting locally for room in the queue window."""
        return self._submitter.waiting_count(job_dirs)

    # ------------------------------------------------------------------ the loops
    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the submit loop and the poll loop until cancelled (the session does both).

        A loop that stops on an unexpected error (a bug: the errors a loop expects are retried or
        settle their own jobs) stops the other, and every job waiting on either is woken with a
        :class:`~wfl_async.errors.LoopStoppedError` naming it: a job never waits on a loop that is
        gone. The other systems of the session go on.
        """
        try:
            async with anyio.create_task_group() as tasks:
                await tasks.start(self._submitter.run)
                tasks.start_soon(self._poller.run)
                self._serving = True
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    self._serving = False
        except Exception as exc:
            self.stop_waiters(exc, "submit/poll")

    def stop_waiters(self, exc: Exception, what: str) -> LoopStoppedError:
        """Wake every job waiting on this system's loops with a :class:`LoopStoppedError` naming
        ``exc``, which stopped ``what`` (also the session's last resort when another of its loops,
        e.g. packing's, stopped); later uses raise it too. Returns the error."""
        cause = first_failure(exc) if isinstance(exc, BaseExceptionGroup) else exc
        log.error("%s: the %s loop stopped on an unexpected error", self.name, what, exc_info=cause)
        error = LoopStoppedError(
            f"{self.name}: wfl_async's {what} loop for this system stopped on an unexpected error "
            f"({type(cause).__name__}: {cause}); the jobs waiting on it were stopped and are left as they are "
            f"(queued, running or finished remotely: a rerun re-attaches to them). This is a bug in wfl_async: "
            f"please report it with the log, which has the traceback.")
        self.stopped_by = error
        self._submitter.stop_waiters(error)
        self._poller.stop_waiters(error)
        return error

    def _check_serving(self) -> None:
        if self.stopped_by is not None:
            raise self.stopped_by
        if not self._serving:
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

    async def wait(self, watch: Watch) -> JobOutcome:
        """Wait until ``watch``'s job has a final marker (its files fetched) or has died.

        Cancellation (including a caller's timeout) leaves the job queued and resumable.
        """
        self._check_serving()
        return await self._poller.wait(watch)

    def watch(self, watch: Watch) -> None:
        """Hand ``watch`` to the poll loop without waiting: its ``done`` is set when the job has a
        final marker (files fetched) or died (:meth:`Watch.result <wfl_async.system.requests.Watch.result>`
        then tells); a caller that stops caring sets its ``abandoned``, and the job stays as it is."""
        self._check_serving()
        self._poller.watch(watch)

    def poll_interval(self) -> float:
        """Seconds between two polls of this system now."""
        return self._poller.interval()

    def poll_history(self) -> list[PollRecord]:
        """This system's last polls, oldest first (see :class:`~wfl_async.system.poll_loop.PollRecord`)."""
        return list(self._poller.history)

    # ------------------------------------------------------------------ the machine's questions
    def select_partition(self, resources: dict[str, Any], *, exact_fit: bool = True,
                         partial_node: bool = False) -> tuple[str, dict[str, int], int]:
        """See :meth:`Machine.select_partition <wfl_async.system.machine.Machine.select_partition>`."""
        return self.machine.select_partition(resources, exact_fit=exact_fit, partial_node=partial_node)

    def limits(self, resources: dict[str, Any], *, exact_fit: bool = True, partial_node: bool = False) -> Limits:
        """See :meth:`Machine.limits <wfl_async.system.machine.Machine.limits>`."""
        return self.machine.limits(resources, exact_fit=exact_fit, partial_node=partial_node)

    async def remote_root(self) -> str:
        """See :meth:`Machine.remote_root <wfl_async.system.machine.Machine.remote_root>`."""
        return await self.machine.remote_root()

    def rundir_path(self) -> str:
        return self.machine.rundir_path()

    def rundir_shell(self) -> str:
        return self.machine.rundir_shell()

    def scheduler_prefix(self) -> str:
        return self.machine.scheduler_prefix()

    async def survey(self, job_dirs: Sequence[str], root: str | None = None, *,
                     events_from: int | None | bool = False, queue: bool = True) -> QueueSurvey:
        """:meth:`Machine.survey <wfl_async.system.machine.Machine.survey>`, with the system's survey extension."""
        return await self.machine.survey(job_dirs, root, events_from=events_from, queue=queue,
                                         extension=self.survey_extension)

    async def control(self, action: str, remote_ids: Sequence[str]) -> None:
        """See :meth:`Machine.control <wfl_async.system.machine.Machine.control>`."""
        await self.machine.control(action, remote_ids)

    async def queue_states(self) -> dict[str, QueueState]:
        return await self.machine.queue_states()

    async def markers(self, job_dirs: Sequence[str], root: str | None = None) -> dict[str, str]:
        return await self.machine.markers(job_dirs, root)

    async def remove_dirs(self, job_dirs: Sequence[str], root: str | None = None) -> None:
        await self.machine.remove_dirs(job_dirs, root)
