"""One configured machine: transport + scheduler + partitions + run directory, and its two loops.

A system turns many concurrent job coroutines into few remote round trips. Jobs never
run remote commands themselves: they put a request on one of the system's streams and
await their own event. :meth:`System.serve` (started by the session, in its task group,
ended when the session closes) runs the two loops that answer them:

submit loop
    1. wait for a :class:`SubmitRequest`; take every request that keeps arriving
       (``batch_window`` at a time, at most ``max_batch_wait``), at most ``MAX_BATCH``;
    2. write the job scripts, send one command: stage every job directory and submit each;
    3. for each job, as its record comes back: an id -> release the job (and record it);
       a transient complaint or a job-limit refusal -> retry later (jittered backoff), the
       job keeps waiting; an unresolved earlier submission -> step 4; anything else ->
       fail that job only;
    4. for unresolved jobs, one command lists the queue's jobs with their working directory:
       a job found there (or a job directory holding a marker) is re-attached; the others
       get their stale lock released and go back to step 1.

poll loop
    1. wait until some job is watched; sleep until one ``check_interval`` after the last poll;
    2. one command per remote root: the scheduler's listing of the user's jobs and the
       marker of every watched job directory (:meth:`System.survey`);
    3. :func:`~wfl_async.jobs.states.classify` each job; fetch every finished job's files in
       one stream; record the changes (one database transaction); wake each job that ended.

A failing command in either loop is logged and retried; it never fails another job.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ..config.expyre_modules import expyre_module
from ..config.system_config import SystemConfig
from ..doctor.problems import rundir_problem
from ..errors import ConfigurationError, RemoteCommandError, SchedulerError, TransportError
from ..jobs import layout
from ..jobs.states import QueueState, Verdict, VerdictKind, classify
from ..scheduler.base import MAX_BATCH, Scheduler, SubmitOutputReader, SubmitResult
from ..transport.base import Transport
from .commands import QUEUE_END, marker_command, parse_markers
from .requests import JobOutcome, QueueSurvey, SubmitRequest, Watch
from .submit import batch_command, retry_delay, scheduler_prefix

__all__ = ["ProgressCallback", "SubmittedCallback", "System"]

log = logging.getLogger(__name__)

_SILENT_FAILURE = re.compile(r"exit status \d+")
"""What a submit record says when the submit program failed without a word."""
MAX_SILENT_RETRIES = 10
"""Submissions tried for a job whose submit program keeps failing without a word."""

ProgressCallback = Callable[[Sequence[tuple[Watch, Verdict]]], Awaitable[None]]
"""Called once per poll with the jobs whose state moved, and their verdicts."""
SubmittedCallback = Callable[[SubmitRequest, str], None]
"""Called (synchronously) as each job is accepted, with its remote root."""


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
                      "submit_retries": 0}
        self.on_progress: ProgressCallback | None = None
        self.on_submitted: SubmittedCallback | None = None
        self._submit_send, self._submit_receive = anyio.create_memory_object_stream[SubmitRequest](math.inf)
        self._watch_send, self._watch_receive = anyio.create_memory_object_stream[Watch](math.inf)
        self._watches: dict[str, Watch] = {}
        self._pending_submit = 0
        self._tasks: anyio.abc.TaskGroup | None = None
        self._remote_root: str | None = None
        self._root_lock = anyio.Lock()

    def __repr__(self) -> str:
        return (f"<System {self.config.name} [{self.config.scheduler} via {self.transport.where} | "
                f"pending submit: {self._pending_submit} | watched: {self.watched_count()}]>")

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def serving(self) -> bool:
        return self._tasks is not None

    def watched_count(self) -> int:
        """Jobs submitted and not yet seen to finish."""
        return len(self._watches) + self._watch_receive.statistics().current_buffer_used

    def running_count(self) -> int:
        """Watched jobs whose worker has started."""
        return sum(1 for w in self._watches.values() if w.started)

    def started_count(self, job_dirs: Collection[str]) -> int:
        """How many of ``job_dirs`` are watched and started (one call's running jobs, for its progress line)."""
        return sum(1 for d in job_dirs if (w := self._watches.get(d)) is not None and w.started)

    # ------------------------------------------------------------------ the loops
    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the submit loop and the poll loop until cancelled (the session does both)."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            tasks.start_soon(self._submit_loop)
            tasks.start_soon(self._poll_loop)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tasks = None

    def _check_serving(self) -> None:
        if self._tasks is None:
            raise RuntimeError(f"system {self.name!r} is not being served: use it through a session "
                               f"(wfl_async.session.session_scope)")

    # ------------------------------------------------------------------ submit
    async def submit(self, request: SubmitRequest) -> str:
        """Stage and submit one job as part of the next batch; return its queue id.

        Cancelling the caller only stops its wait: the job is still submitted, and recorded.

        :raises SchedulerError: the scheduler refused this job (not for transient errors, which
            are retried)
        """
        self._check_serving()
        self._pending_submit += 1
        self._submit_send.send_nowait(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.remote_id is not None
        return request.remote_id

    async def _submit_loop(self) -> None:
        async for first in self._submit_receive:
            batch = [first]
            await self._gather(batch)
            # shielded: a batch taken from the stream is finished (and its jobs settled) even
            # while the session closes, so no job is left submitted but unrecorded
            with anyio.CancelScope(shield=True):
                await self._submit_batch(batch)

    async def _gather(self, batch: list[SubmitRequest]) -> None:
        """Take requests while they keep arriving (each ``batch_window`` brought more), at most
        ``max_batch_wait``: jobs of one call become ready one after another."""
        waited = 0.0
        while len(batch) < MAX_BATCH and waited < self.max_batch_wait:
            await anyio.sleep(self.batch_window)
            waited += self.batch_window
            before = len(batch)
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._submit_receive.receive_nowait())
                except anyio.WouldBlock:
                    break
            if len(batch) == before:
                return

    async def _submit_batch(self, batch: list[SubmitRequest]) -> None:
        try:
            root = await self.remote_root()
            command = batch_command(self.scheduler, self.config, root, batch)
            for relpath, text in command.scripts.items():
                await anyio.Path(batch[0].local_root / relpath).write_text(text)
        except TransportError as exc:  # nothing was sent: every job of the batch may try again
            self._retry(batch, "transient", f"could not prepare the batch: {exc}")
            return
        except Exception as exc:  # a mistake (an unwritable rundir, a bad header): retrying cannot help
            log.info("%s: cannot submit a batch of %d job(s): %s", self.name, len(batch), exc)
            for request in batch:
                if not request.done.is_set():
                    self._settle(request, exc)
            return
        self.stats["submit_commands"] += 1
        self.stats["scheduler_calls"] += 1
        results: dict[int, SubmitResult] = {}
        reader = SubmitOutputReader(self.scheduler)

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
            answer = await self.transport.upload(batch[0].local_root, command.uploads, root, before=command.before,
                                                 then=command.then, fresh=command.fresh, on_line=on_line,
                                                 kind="submit", retry=True)
            for index, outcome in enumerate(self.scheduler.parse_submit_output(
                    answer.stdout.decode(errors="replace"), len(batch))):
                results.setdefault(index, outcome)
        except TransportError as exc:
            # repeating the command is safe (the remote lock), so every job still waiting retries;
            # a job the scheduler took before the answer was lost is found through its lock
            self._retry([r for i, r in enumerate(batch) if i not in results], "transient",
                        f"the submit command failed: {exc}")
        unresolved: list[SubmitRequest] = []
        for index, outcome in results.items():
            request = batch[index]
            if outcome.remote_id is not None:
                if not request.done.is_set():
                    self._accepted(request, outcome.remote_id, root)
            elif outcome.unresolved:
                unresolved.append(request)
            else:
                self._refused(request, outcome.error or "no answer")
        if unresolved:
            await self._resolve(root, unresolved)

    def _accepted(self, request: SubmitRequest, remote_id: str, root: str) -> None:
        if request.done.is_set():
            return
        request.remote_id = remote_id
        if remote_id:  # "" is a job an earlier submission ran (its marker says so), logged by _resolve
            log.info("job %s (%s): submitted to %s as %s", request.job_name, request.job_dir, self.name, remote_id)
        if self.on_submitted is not None:
            self.on_submitted(request, root)
        self._settle(request)

    def _settle(self, request: SubmitRequest, error: BaseException | None = None) -> None:
        request.error = error
        self._pending_submit -= 1
        request.done.set()

    def _refused(self, request: SubmitRequest, complaint: str) -> None:
        kind = self.scheduler.classify_error(complaint)
        if kind is None and _SILENT_FAILURE.fullmatch(complaint) and request.attempts < MAX_SILENT_RETRIES:
            # no complaint at all: the job may or may not have been queued; the retry looks
            # for it first (its answer is unresolved) and submits again only if it is not there
            kind = "transient"
        if kind is not None:
            self._retry([request], kind, complaint)
            return
        log.info("job %s (%s): %s refused it: %s", request.job_name, request.job_dir, self.name, complaint)
        self._settle(request, SchedulerError(
            f"{self.name}: submitting job {request.job_name!r} ({request.job_dir}) failed: {complaint}"))

    def _retry(self, requests: Sequence[SubmitRequest], kind: str, reason: str) -> None:
        """Submit ``requests`` again after a jittered backoff; they keep waiting meanwhile."""
        assert self._tasks is not None
        for request in requests:
            if request.done.is_set():
                continue
            request.attempts += 1
            request.release_lock = False
            delay = retry_delay("limit" if kind == "limit" else "transient", request.attempts)
            self.stats["submit_retries"] += 1
            if kind == "limit":
                log.info("job %s (%s): %s refused it for the user's job limit (%s); waiting %.0f s for room",
                         request.job_name, request.job_dir, self.name, reason, delay)
            else:
                log.info("job %s (%s): %s could not take it now (%s); retry %d in %.1f s",
                         request.job_name, request.job_dir, self.name, reason, request.attempts, delay)
            self._tasks.start_soon(self._resend_after, request, delay)

    async def _resend_after(self, request: SubmitRequest, delay: float) -> None:
        await anyio.sleep(delay)
        self._submit_send.send_nowait(request)

    async def _resolve(self, root: str, requests: Sequence[SubmitRequest]) -> None:
        """Jobs whose earlier submission left no usable answer: re-attach, or submit again.

        One command lists the queue's jobs with their working directories and the markers of
        these job directories. A job found in the queue is re-attached to; a directory with a
        marker ran already (the poll loop takes it from there); any other job was never
        queued, so its stale lock is released and it is submitted again.
        """
        find = self.scheduler.find_command()
        dirs = [r.job_dir for r in requests]
        command = (f"( {scheduler_prefix(self.config)}{find} ) 2>&1; " if find else "") + \
            f"echo \"{QUEUE_END} $?\"; {marker_command(root, dirs)}"
        try:
            result = await self.transport.run(command, check=False, kind="submit", retry=True)  # a query
            queue_text, _, rest = result.stdout.decode(errors="replace").partition(QUEUE_END)
            status_rc, _, marker_text = rest.partition("\n")
            markers = parse_markers(marker_text, root, self.name)
        except (TransportError, SchedulerError) as exc:
            self._retry(requests, "transient", f"could not look for earlier submissions: {exc}")
            return
        if find and status_rc.strip() != "0":
            self._retry(requests, self.scheduler.classify_error(queue_text) or "transient",
                        f"could not list the queue: {queue_text.strip()[-300:]}")
            return
        in_queue = self.scheduler.parse_find_output(queue_text) if find else {}
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
                         f" (no marker; {self.scheduler.name} cannot list working directories)")
                request.release_lock = True
                self._submit_send.send_nowait(request)

    # ------------------------------------------------------------------ wait
    async def wait(self, watch: Watch) -> JobOutcome:
        """Wait until ``watch``'s job has a final marker (its files fetched) or has died.

        Cancellation (including a caller's timeout) leaves the job queued and resumable.
        """
        self._check_serving()
        self._watch_send.send_nowait(watch)
        try:
            await watch.done.wait()
        finally:
            watch.abandoned = True
        assert watch.outcome is not None
        return watch.outcome

    def poll_interval(self) -> float:
        intervals = [w.check_interval for w in self._watches.values()]
        return max(0.2, min(intervals)) if intervals else 1.0

    async def _poll_loop(self) -> None:
        last_poll = -math.inf
        while True:
            if not self._watches:
                self._add_watch(await self._watch_receive.receive())
            self._take_new_watches()
            due = last_poll + self.poll_interval() - time.monotonic()
            if due > 0:
                await anyio.sleep(due)
                self._take_new_watches()
            if not self._watches:
                continue
            try:
                with anyio.CancelScope(shield=True):  # a poll's results are recorded even at close
                    changed = await self._poll_once()
            except (TransportError, SchedulerError) as exc:
                log.warning("%s: polling failed (%s); retrying", self.name, exc)
                changed = []
            finally:
                last_poll = time.monotonic()
            if changed and self.on_progress is not None:
                with anyio.CancelScope(shield=True):
                    await self.on_progress(changed)
            for watch, verdict in changed:
                if verdict.kind in (VerdictKind.FINISHED, VerdictKind.DIED):
                    self._watches.pop(watch.job_dir, None)
                    watch.done.set()

    def _add_watch(self, watch: Watch) -> None:
        if not watch.abandoned:
            self._watches[watch.job_dir] = watch

    def _take_new_watches(self) -> None:
        while True:
            try:
                self._add_watch(self._watch_receive.receive_nowait())
            except anyio.WouldBlock:
                break
        for job_dir in [d for d, w in self._watches.items() if w.abandoned]:
            del self._watches[job_dir]

    async def _poll_once(self) -> list[tuple[Watch, Verdict]]:
        """One status round trip per remote root for every watched job, then one fetch per root."""
        default_root = await self.remote_root()
        by_root: dict[str, list[Watch]] = {}
        for watch in list(self._watches.values())[:MAX_BATCH * 10]:
            by_root.setdefault(watch.remote_root or default_root, []).append(watch)
        changed: list[tuple[Watch, Verdict]] = []
        for root, watches in by_root.items():
            self.stats["poll_commands"] += 1
            found = await self.survey([w.job_dir for w in watches], root)
            now = time.monotonic()
            finished: list[Watch] = []
            for watch in watches:
                verdict = classify(remote_id=watch.remote_id, marker=found.markers.get(watch.job_dir),
                                   states=found.states, grace=self.config.died_grace_seconds, where=self.name,
                                   missing_for=None if watch.missing_since is None else now - watch.missing_since)
                if verdict.kind is VerdictKind.FINISHED:
                    finished.append(watch)
                    watch.outcome = JobOutcome(verdict.marker, QueueState.FINISHED)
                    changed.append((watch, verdict))
                    continue
                if verdict.kind is VerdictKind.MISSING:
                    watch.missing_since = watch.missing_since if watch.missing_since is not None else now
                else:
                    watch.missing_since = None
                if verdict.kind is VerdictKind.DIED:
                    log.info("job %s on %s: died: %s", watch.job_dir, self.name, verdict.message)
                    watch.outcome = JobOutcome(None, verdict.queue_state, verdict.message)
                    changed.append((watch, verdict))
                elif verdict.started and not watch.started:
                    watch.started = True
                    changed.append((watch, verdict))
            if finished:
                await self._fetch(root, finished)
        return changed

    async def _fetch(self, root: str, finished: list[Watch]) -> None:
        by_local_root: dict[Path, list[Watch]] = {}
        for watch in finished:
            by_local_root.setdefault(watch.local_root, []).append(watch)
        for local_root, group in by_local_root.items():
            # the final marker comes too: it holds the size and sha256 the result is checked against
            paths = [f"{w.job_dir}/{name}" for w in group for name in (*layout.FETCH_ON_FINISH, *w.fetch)]
            self.stats["fetch_commands"] += 1
            await self.transport.download(root, paths, local_root)

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
    async def survey(self, job_dirs: Sequence[str], root: str | None = None) -> QueueSurvey:
        """In ONE command: the scheduler's listing of the user's jobs, and the markers in ``job_dirs``.

        A failing status command gives ``states=None`` (logged), never an error: a job is not
        called died because its scheduler could not answer.

        :param root: remote directory holding ``job_dirs`` (default: this project's)
        :raises SchedulerError: ``root`` cannot be entered (the jobs' directories are gone)
        """
        root = root or await self.remote_root()
        command = (f"( {self.scheduler_prefix()}{self.scheduler.status_command()} ) 2>&1; "
                   f"echo \"{QUEUE_END} $?\"; {marker_command(root, job_dirs)}")
        self.stats["scheduler_calls"] += 1
        result = await self.transport.run(command, check=False, kind="poll", retry=True)
        queue_text, _, rest = result.stdout.decode(errors="replace").partition(QUEUE_END)
        status_rc, _, marker_text = rest.partition("\n")
        if status_rc.strip() != "0":
            log.warning("%s: status command failed (%s); jobs are taken as still active: %s", self.name,
                        self.scheduler.classify_error(queue_text) or "not a known transient error",
                        queue_text.strip()[-500:])
            states = None
        else:
            states = self.scheduler.parse_status_output(queue_text)
        return QueueSurvey(states, queue_text, parse_markers(marker_text, root, self.name))

    async def control(self, action: str, remote_ids: Sequence[str]) -> None:
        """Cancel, hold or release jobs in one scheduler command."""
        if not remote_ids:
            return
        builders = {"cancel": self.scheduler.cancel_command, "hold": self.scheduler.hold_command,
                    "release": self.scheduler.release_command}
        self.stats["scheduler_calls"] += 1
        try:
            await self.transport.run(f"{self.scheduler_prefix()}{builders[action](list(remote_ids))}", kind="cancel")
        except RemoteCommandError as exc:
            raise SchedulerError(f"{self.name}: {action} of {list(remote_ids)} failed: {exc}") from exc

    async def queue_states(self) -> dict[str, QueueState]:
        """The scheduler's view of every job of this user (one command)."""
        self.stats["scheduler_calls"] += 1
        result = await self.transport.run(f"{self.scheduler_prefix()}{self.scheduler.status_command()}", kind="poll",
                                          retry=True)
        return self.scheduler.parse_status_output(result.stdout.decode(errors="replace"))

    async def markers(self, job_dirs: Sequence[str], root: str | None = None) -> dict[str, str]:
        """Which of ``job_dirs`` hold a started/final marker (one command)."""
        if not job_dirs:
            return {}
        root = root or await self.remote_root()
        result = await self.transport.run(marker_command(root, job_dirs), kind="poll", retry=True)
        return parse_markers(result.stdout.decode(errors="replace"), root, self.name)

    async def remove_dirs(self, job_dirs: Sequence[str], root: str | None = None) -> None:
        """Delete job directories on the system (one command); a root that is gone holds none."""
        if not job_dirs:
            return
        root = root or await self.remote_root()
        # rm -rf is safe to repeat after a dropped connection
        await self.transport.run(f"cd {shlex.quote(root)} 2>/dev/null || exit 0; rm -rf -- "
                                 + " ".join(shlex.quote(d) for d in job_dirs), kind="cancel", retry=True)

