"""The submit loop of one system: many staged jobs -> one remote command per batch.

A job's coroutine calls :meth:`System.submit <wfl_async.system.System.submit>`, which puts
its :class:`~wfl_async.system.requests.SubmitRequest` on this loop's stream and waits on
the request's own event. The loop (started by :meth:`System.serve`):

1. waits for a request and for room in the system's queue window (``max_queued_jobs``,
   :mod:`wfl_async.system.window`); takes every request that keeps arriving and fits
   (``batch_window`` at a time, at most ``max_batch_wait``), at most ``MAX_BATCH``; while no
   job of the system is watched, at most ``FIRST_BATCH``, so the first jobs start while the
   rest of the call is staged;
2. writes the job scripts locally, then (after a token of the system's scheduler rate limit,
   :mod:`wfl_async.system.rate`) sends **one** command
   (:func:`~wfl_async.system.submit.batch_command` through
   :meth:`Transport.upload <wfl_async.transport.base.Transport.upload>`): stage every job
   directory from one tar stream and submit each with the scheduler's batch loop (a batch
   whose command would be longer than ``MAX_COMMAND_BYTES`` is split, the rest waits for the
   next command);
3. for each job, as its record comes back: an id -> the request is settled (and reported to
   the :class:`~wfl_async.system.recorder.Recorder`); a transient complaint or a job-limit refusal -> sent
   again after a jittered backoff, the job keeps waiting; an unresolved earlier submission
   -> step 4; anything else -> that job alone fails;
4. for unresolved jobs, one command lists the queue's jobs with their working directory
   and the jobs' markers: a job found is re-attached; the others get their stale lock
   released and go back to step 1.

A failing command is logged and retried (bounded, :data:`MAX_TRANSIENT_RETRIES`); one that
:func:`~wfl_async.failures.permanent_cause` calls permanent (disk full, quota,
read-only, permission denied, missing command) stops every waiting job at once
(:meth:`SubmitLoop._failed_permanently`).

The loop is given the :class:`~wfl_async.system.machine.Machine` (scheduler, transport, run
directory, rate limit, counters), the system's :class:`~wfl_async.system.window.QueueWindow`,
the recorder, and how many jobs the poll loop watches; it never sees the ``System``.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Callable, Collection, Sequence

import anyio
import anyio.abc

from ..errors import RemoteCommandError, SchedulerError, TransportError
from ..failures import permanent_cause, permanent_error
from ..scheduler.base import SubmitOutputReader, SubmitResult
from ..transport.base import MAX_COMMAND_BYTES, upload_command
from .batching import BatchFull, gather_arrivals, resend_after
from .commands import QUEUE_END, dir_list, marker_command, parse_markers
from .machine import Machine
from .recorder import Recorder
from .requests import SubmitRequest
from .submit import BatchCommand, batch_command, retry_delay
from .window import QueueWindow

__all__ = ["MAX_SILENT_RETRIES", "MAX_TRANSIENT_RETRIES", "WARN_AFTER_RETRIES", "SubmitLoop"]

log = logging.getLogger(__name__)

_SILENT_FAILURE = re.compile(r"exit status \d+")
"""What a submit record says when the submit program failed without a word."""
MAX_SILENT_RETRIES = 10
"""Submissions tried for a job whose submit program keeps failing without a word."""
MAX_TRANSIENT_RETRIES = 20
"""Retries of a job whose submission keeps failing transiently (about 15 min with the backoff's
60 s cap): then it fails, so a fault nobody recognised never hangs a run."""
WARN_AFTER_RETRIES = 3
"""From this retry on, a WARNING (not INFO) says what is retried and why."""


class SubmitLoop:
    """Batches one system's submit requests into few remote commands; see the module docstring."""

    def __init__(self, machine: Machine, window: QueueWindow, recorder: Recorder, *, watched: Callable[[], int],
                 batch_window: float = 0.05, max_batch_wait: float = 1.0) -> None:
        """
        :param watched: how many jobs of the system the poll loop watches (0: the next batch is a
            call's first, kept small so its jobs start early)
        :param batch_window: take requests while each ``batch_window`` s brings more ...
        :param max_batch_wait: ... for at most this long
        """
        self.machine = machine
        self.window = window
        self.recorder = recorder
        self._watched = watched
        self.batch_window = batch_window
        self.max_batch_wait = max_batch_wait
        self._send, self._receive = anyio.create_memory_object_stream[SubmitRequest](math.inf)
        self.pending = 0
        """Requests handed to the loop and not yet settled."""
        self._tasks: anyio.abc.TaskGroup | None = None
        self._deferred: deque[SubmitRequest] = deque()
        """Requests taken from the stream that did not fit the window or the batch: sent first next."""
        self._unadmitted: set[str] = set()
        """Job dirs of requests handed to the loop that have no room in the window yet."""
        self.in_flight = 0
        """Jobs of the batch being submitted now (finished even when the session closes; Ctrl-C says so)."""
        self._unsettled: set[SubmitRequest] = set()
        """Requests handed to the loop and not settled yet, wherever they are (:meth:`stop_waiters`)."""
        self.stopped_by: BaseException | None = None
        """Set by :meth:`stop_waiters`: the loop is gone, and every later request raises this."""

    def waiting_count(self, job_dirs: Collection[str] | None = None) -> int:
        """Requests (for ``job_dirs``, default all) waiting for room in a full queue window."""
        if not self.window.full():
            return 0
        if job_dirs is None:
            return len(self._unadmitted)
        return sum(1 for d in job_dirs if d in self._unadmitted)

    async def submit(self, request: SubmitRequest) -> str:
        """Hand ``request`` to the loop and wait for its queue id (see :meth:`System.submit`)."""
        if self.stopped_by is not None:
            raise self.stopped_by
        self.pending += 1
        self._unadmitted.add(request.job_dir)
        self._unsettled.add(request)
        self._send.send_nowait(request)
        return await request.settled()

    def stop_waiters(self, error: BaseException) -> None:
        """The loop stopped for good: settle every request not yet settled with ``error`` (none waits
        forever; one whose command had gone out may be queued: a rerun resolves it as after a
        driver killed mid-submission), and refuse later requests with it."""
        self.stopped_by = error
        for request in list(self._unsettled):
            self._settle(request, error)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve requests until cancelled (delayed retries run in the loop's own task group)."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            task_status.started()
            await self._serve()

    async def _serve(self) -> None:
        while True:
            first = self._deferred.popleft() if self._deferred else await self._receive.receive()
            await self.window.admit(first.job_dir)
            self._unadmitted.discard(first.job_dir)
            batch = [first]
            await self._gather(batch)
            # shielded: a batch taken from the stream is finished (and its jobs settled) even
            # while the session closes, so no job is left submitted but unrecorded
            with anyio.CancelScope(shield=True):
                self.in_flight = len(batch)
                try:
                    await self._submit_batch(batch)
                finally:
                    self.in_flight = 0

    async def _gather(self, batch: list[SubmitRequest]) -> None:
        """Take requests while they keep arriving (each ``batch_window`` brought more), at most
        ``max_batch_wait``: jobs of one call become ready one after another."""
        await gather_arrivals(batch, self._take_admitted, window=self.batch_window,
                              longest=self.max_batch_wait, first=not self._watched())

    def _take_admitted(self) -> SubmitRequest:
        """The next waiting request, with room in the queue window (else the batch goes now)."""
        request = self._deferred.popleft() if self._deferred else self._receive.receive_nowait()
        if not self.window.try_admit(request.job_dir):
            self._deferred.appendleft(request)  # waits for room, first in line
            raise BatchFull
        self._unadmitted.discard(request.job_dir)
        return request

    async def _submit_batch(self, batch: list[SubmitRequest]) -> None:
        machine = self.machine
        try:
            root = await machine.remote_root()
            command = batch_command(machine.scheduler, machine.config, root, batch)
            while len(batch) > 1 and _command_bytes(root, command) > MAX_COMMAND_BYTES * 3 // 4:
                # long job directory paths: the rest of the batch goes in the next command
                self._deferred.extendleft(reversed(batch[len(batch) // 2:]))
                del batch[len(batch) // 2:]
                command = batch_command(machine.scheduler, machine.config, root, batch)
        except TransportError as exc:  # nothing was sent: every job of the batch may try again
            self._retry(batch, "transient", f"could not prepare the batch: {exc}")
            return
        except Exception as exc:  # a mistake (an unwritable rundir, a bad header): retrying cannot help
            log.info("%s: cannot submit a batch of %d job(s): %s", machine.name, len(batch), exc)
            for request in batch:
                if not request.done.is_set():
                    self._settle(request, exc)
            return
        machine.stats["submit_commands"] += 1
        await machine.scheduler_call()
        machine.stats["scheduler_submissions"] += command.submissions  # sbatch/qsub runs: 1 per job or per array
        results: dict[int, SubmitResult] = {}
        reader = SubmitOutputReader(machine.scheduler)

        def on_line(line: str) -> None:
            # each job is released as soon as the scheduler has taken it, while the rest of the
            # batch is still being submitted: the poll loop can see it finish meanwhile
            parsed = reader.feed(line)
            if parsed is not None and parsed[0] < len(batch) and parsed[0] not in results:
                results[parsed[0]] = parsed[1]
                if parsed[1].remote_id is not None:
                    self._accepted(batch[parsed[0]], parsed[1].remote_id, root)

        try:
            # retry=True: the command is safe to repeat after a dropped connection (the remote
            # lock, resets and lock releases done once; see system/submit.py and the scheduler)
            answer = await machine.transport.upload(batch[0].local_root, command.uploads, root, before=command.before,
                                                   then=command.then, fresh=command.fresh, on_line=on_line,
                                                   kind="submit", retry=True, contents=_contents(command, batch))
            for index, outcome in enumerate(machine.scheduler.parse_submit_output(
                    answer.stdout.decode(errors="replace"), len(batch))):
                results.setdefault(index, outcome)
        except TransportError as exc:
            waiting = [r for i, r in enumerate(batch) if i not in results]
            if self._failed_permanently(waiting, exc, machine.name, root, f"staging {len(waiting)} job(s)"):
                return
            # repeating the command is safe (the remote lock), so every job still waiting retries;
            # a job the scheduler took before the answer was lost is found through its lock
            self._retry(waiting, "transient", f"the submit command failed: {exc}")
        unresolved: list[SubmitRequest] = []
        for index, outcome in results.items():
            request = batch[index]
            if outcome.remote_id is not None:
                if not request.done.is_set():
                    self._accepted(request, outcome.remote_id, root)
            elif outcome.unresolved:
                unresolved.append(request)
            else:
                self._refused(request, outcome.error or "no answer", root)
        if unresolved:
            await self._resolve(root, unresolved)

    def _accepted(self, request: SubmitRequest, remote_id: str, root: str) -> None:
        if request.done.is_set():
            return
        request.remote_id = remote_id
        if remote_id:  # "" is a job an earlier submission ran (its marker says so), logged by _resolve
            log.info("job %s (%s): submitted to %s as %s", request.job_name, request.job_dir, self.machine.name,
                     remote_id)
        self.recorder.submitted([request], root)
        self._settle(request)

    def _settle(self, request: SubmitRequest, error: BaseException | None = None) -> None:
        self._unsettled.discard(request)
        request.error = error
        self.pending -= 1
        if error is not None:  # never queued: its room in the window is free again
            self.window.left([request.job_dir])
        request.done.set()

    def _refused(self, request: SubmitRequest, complaint: str, root: str) -> None:
        """The retry decision for a job the scheduler did not take: failed for good (a permanent
        cause), retried (transient, job limit) or failed."""
        if self._failed_permanently([request], complaint, self.machine.name, root, "submitting 1 job"):
            return
        kind = self.machine.scheduler.classify_error(complaint)
        if kind is None and _SILENT_FAILURE.fullmatch(complaint) and request.attempts < MAX_SILENT_RETRIES:
            # no complaint at all: the job may or may not have been queued; the retry looks
            # for it first (its answer is unresolved) and submits again only if it is not there
            kind = "transient"
        if kind is not None:
            self._retry([request], kind, complaint)
            return
        log.info("job %s (%s): %s refused it: %s", request.job_name, request.job_dir, self.machine.name, complaint)
        self._settle(request, SchedulerError(
            f"{self.machine.name}: submitting job {request.job_name!r} ({request.job_dir}) failed: {complaint}"))

    def _failed_permanently(self, requests: Sequence[SubmitRequest], failure: BaseException | str, where: str,
                            path: str, doing: str) -> bool:
        """The one place a submission failure is judged permanent (:mod:`~wfl_async.failures`).

        If it is, ``requests`` and every request still waiting in this loop fail at once with an
        error naming the system, the path, the cause and the fix (a full disk fails them all
        alike; retrying would only hide it), and True is returned; nothing else is submitted.
        """
        cause = permanent_cause(failure)
        if cause is None:
            return False
        waiting = [*requests, *self._deferred]
        self._deferred.clear()
        while True:
            try:
                waiting.append(self._receive.receive_nowait())
            except anyio.WouldBlock:
                break
        waiting = [r for r in dict.fromkeys(waiting) if not r.done.is_set()]
        detail = failure.stderr.decode(errors="replace") if isinstance(failure, RemoteCommandError) else str(failure)
        error = permanent_error(cause, system=where, path=path, doing=doing, detail=detail, consequence=(
            f"{len(waiting)} job(s) were stopped without being submitted; nothing half-made was left behind "
            f"(a failed upload removes its temporary directory)."))
        log.error("%s", error)
        for request in waiting:
            self._unadmitted.discard(request.job_dir)
            self._settle(request, error)
        return True

    def _retry(self, requests: Sequence[SubmitRequest], kind: str, reason: str) -> None:
        """Submit ``requests`` again after a jittered backoff; they keep waiting meanwhile.

        A transient failure is retried at most :data:`MAX_TRANSIENT_RETRIES` times per job (a
        WARNING from the :data:`WARN_AFTER_RETRIES`-th on says what and why); a job-limit refusal
        waits for room as long as it takes (logged each time).
        """
        assert self._tasks is not None
        machine = self.machine
        warned = False
        for request in requests:
            if request.done.is_set():
                continue
            request.attempts += 1
            request.release_lock = False
            if kind != "limit" and request.attempts > MAX_TRANSIENT_RETRIES:
                log.error("job %s (%s): %s failed %d times; giving up: %s", request.job_name, request.job_dir,
                          machine.name, request.attempts, reason)
                self._settle(request, SchedulerError(
                    f"{machine.name}: submitting job {request.job_name!r} ({request.job_dir}) failed "
                    f"{MAX_TRANSIENT_RETRIES} times in a row; the last failure: {reason}. Check the system "
                    f"('wfl-async doctor {machine.name}') and rerun: jobs already queued are re-attached."))
                continue
            delay = retry_delay("limit" if kind == "limit" else "transient", request.attempts)
            machine.stats["submit_retries"] += 1
            if kind == "limit":
                log.info("job %s (%s): %s refused it for the user's job limit (%s); waiting %.0f s for room",
                         request.job_name, request.job_dir, machine.name, reason, delay)
            else:
                level = logging.WARNING if request.attempts >= WARN_AFTER_RETRIES and not warned else logging.INFO
                warned = warned or level == logging.WARNING
                log.log(level, "job %s (%s)%s: %s could not take it now (%s); retry %d of %d in %.1f s",
                        request.job_name, request.job_dir,
                        f" and {len(requests) - 1} more" if level == logging.WARNING and len(requests) > 1 else "",
                        machine.name, reason, request.attempts, MAX_TRANSIENT_RETRIES, delay)
            self._tasks.start_soon(resend_after, self._send, request, delay)

    async def _resolve(self, root: str, requests: Sequence[SubmitRequest]) -> None:
        """Jobs whose earlier submission left no usable answer: re-attach, or submit again.

        One command lists the queue's jobs with their working directories and the markers of
        these job directories. A job found in the queue is re-attached to; a directory with a
        marker ran already (the poll loop takes it from there); any other job was never
        queued, so its stale lock is released and it is submitted again.
        """
        machine = self.machine
        find = machine.scheduler.find_command()
        dirs = [r.job_dir for r in requests]
        command = (f"( {machine.scheduler_prefix()}{find} ) </dev/null 2>&1; " if find else "") + \
            f"echo \"{QUEUE_END} $?\"; {marker_command(root)}"
        try:
            if find:
                await machine.scheduler_call()
            result = await machine.transport.run(command, stdin=dir_list(dirs), check=False, kind="submit",
                                                retry=True)  # a query
            queue_text, _, rest = result.stdout.decode(errors="replace").partition(QUEUE_END)
            status_rc, _, marker_text = rest.partition("\n")
            markers = parse_markers(marker_text, root, machine.name)
        except (TransportError, SchedulerError) as exc:
            self._retry(requests, "transient", f"could not look for earlier submissions: {exc}")
            return
        if find and status_rc.strip() != "0":
            self._retry(requests, machine.scheduler.classify_error(queue_text) or "transient",
                        f"could not list the queue: {queue_text.strip()[-300:]}")
            return
        in_queue = machine.scheduler.parse_find_output(queue_text) if find else {}
        for request in requests:
            remote_id = in_queue.get(f"{root}/{request.job_dir}")
            if remote_id is not None:
                log.info("job %s (%s): an earlier submission had queued it as %s; re-attached",
                         request.job_name, request.job_dir, remote_id)
                self._accepted(request, remote_id, root)
            elif request.job_dir in markers:
                log.info("job %s (%s): an earlier submission ran it (marker %s); re-attached",
                         request.job_name, request.job_dir, markers[request.job_dir])
                self._accepted(request, "", root)
            else:
                log.info("job %s (%s): its earlier submission did not queue it%s; submitting again",
                         request.job_name, request.job_dir, "" if find else
                         f" (no marker; {machine.scheduler.name} cannot list working directories)")
                request.release_lock = True
                self._send.send_nowait(request)


def _contents(command: BatchCommand, batch: Sequence[SubmitRequest]) -> dict[str, bytes]:
    """The files a batch sends from memory (relative path -> bytes): its job scripts and the jobs' staged
    ``contents`` (their tasks): nothing is written locally to be read back (issue 16)."""
    contents = {path: text.encode() for path, text in command.scripts.items()}
    for request in batch:
        contents.update(request.contents)
    return contents


def _command_bytes(root: str, command: BatchCommand) -> int:
    """Length of the shell text that stages and submits ``command`` (what the transport will send)."""
    return len(upload_command(root, before=command.before, then=command.then, fresh=command.fresh).encode())
