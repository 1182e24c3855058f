"""The poll loop of one system: every watched job checked in one short remote command per poll.

A job's coroutine calls :meth:`System.wait <wfl_async.system.System.wait>`, which puts its
:class:`~wfl_async.system.requests.Watch` on this loop's stream and waits on the watch's own
event. The loop (started by :meth:`System.serve`):

1. waits until some job is watched; sleeps until one interval after the previous poll
   *started* (:meth:`PollLoop.interval`: the smallest ``check_interval``, at least 0.2 s,
   backing off while nothing changes, tightening when running jobs are expected to end);
2. sends one command per remote root (:meth:`Machine.survey
   <wfl_async.system.machine.Machine.survey>`, with the system's survey extension; when it lists the queue, after a token of the system's
   scheduler rate limit, and only if one is free at once, so a poll never waits for a token):
   the scheduler's listing of the user's jobs, the lines jobs appended to the run's event
   log (:data:`~wfl_async.jobs.layout.EVENTS`) since the last poll, and the markers of the
   job directories named on its stdin. Those are only the jobs that need a look: newly
   watched ones, ones the queue no longer lists as active, and, every
   :data:`FULL_SCAN_SECONDS`, all of them (the slow fallback for a lost event line). So a
   poll's work on the cluster grows with what changed, not with the number of jobs;
3. :func:`~wfl_async.jobs.states.classify` each job; hands the finished ones to the fetch
   task and reports the other changes to the :class:`~wfl_async.system.recorder.Recorder`
   (the session's: one database transaction).

The **fetch task** takes every finished job handed to it so far (at most
:data:`FETCHES_IN_FLIGHT` batches at once), brings their files back
(:meth:`Transport.download <wfl_async.transport.base.Transport.download>`: names on stdin,
at most ``FETCH_PATHS`` per command), records them, and wakes each job. It runs beside the
loop, so a long fetch never delays the next poll.

A failing command is logged and retried at the next poll; it never fails a job (a failing
status command makes no job died: the jobs are taken as still active).

The loop keeps its last :data:`POLL_HISTORY` polls (:attr:`PollLoop.history`, a
:class:`PollRecord` each: when it started, how long it took, which jobs it found finished), so
its timing can be checked against when the jobs really finished (``wfl-async bench``, tests).
"""

from __future__ import annotations

import logging
import math
import statistics
import tarfile
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from ..errors import SchedulerError, TransportError
from ..failures import permanent_cause, permanent_error
from ..jobs import layout
from ..jobs.fetched import BundledFiles, save_bundle
from ..jobs.states import (
    ACTIVE_STATES,
    MARKER_FILES,
    Marker,
    Phase,
    QueueState,
    Step,
    Verdict,
    VerdictKind,
    observe,
    unchanged,
)
from ..scheduler.base import Accounted
from ..transport.base import FETCH_PATHS
from .commands import EventLogRead
from .listing import ListingDiff
from .machine import Machine, SurveyExtension
from .recorder import Recorder
from .requests import JobOutcome, QueueSurvey, Watch
from .window import QueueWindow

__all__ = ["BACKOFF_AFTER", "FULL_SCAN_SECONDS", "MIN_POLL_INTERVAL", "POLL_HISTORY", "PollLoop", "PollRecord"]

log = logging.getLogger(__name__)

MIN_POLL_INTERVAL = 0.2
"""Seconds: no system is polled more often, whatever ``check_interval`` a job asks for."""
FULL_SCAN_SECONDS = 60.0
"""Every this many seconds a poll also looks at the markers of every watched job directory,
in case a job's event line was lost (a filesystem whose appends are not atomic across hosts)."""
BACKOFF_AFTER = 30.0
"""Seconds without any change before the poll interval starts to grow."""
BACKOFF_SLOPE = 0.25
"""Seconds the interval grows by per second of quiet, once it grows (up to ``poll_max_interval``)."""
_DURATIONS = 50
"""Durations of the last finished jobs kept to tell when running jobs are due to end."""
_FETCH_JOBS = FETCH_PATHS // 4
"""Finished jobs taken in one go by the fetch task (each brings about four files)."""
FETCHES_IN_FLIGHT = 2
"""Fetches running at once: the next batch comes over the network while the last is written to disk
(at 10^4 results writing the files, not the command, is most of a fetch)."""

POLL_HISTORY = 2000
"""Polls kept in :attr:`PollLoop.history`."""

_Finished = tuple[str, Watch, Verdict]
"""A finished job for the fetch task: its remote root, its watch, its verdict."""


@dataclass
class PollRecord:
    """One poll, as the loop saw it."""

    started: float
    """``time.time()`` when its command was about to go (wall clock: comparable with file times)."""
    interval: float
    """The interval it was scheduled with: it was due that long after the previous poll's start."""
    duration: float = 0.0
    """Seconds until its answer was classified."""
    listed: bool = False
    """It listed the queue (a scheduler call)."""
    finished: dict[str, float] = field(default_factory=dict)
    """Job dirs it found finished (handed to the fetch task), each with when the loop took its
    watch (``time.time()``; a job may finish before the driver knows its queue id: no poll could
    look for it before then)."""

_FINAL_MARKERS = frozenset(m.value for m in Marker if m.final)
"""Marker names that end a job (what a survey or the event log prints)."""
_RECORDED_SUCCEEDED = Verdict(VerdictKind.FINISHED, Marker.SUCCEEDED)
"""The verdict a watch's record gave (:attr:`Watch.recorded_succeeded`): fetched as any finished job."""

def _finished(watch: Watch, seen: Sequence[dict[str, str]]) -> bool:
    """The job wrote its final marker: seen by an earlier poll, or by this one (``seen``: the markers
    and the event log's lines, job dir -> marker name)."""
    return (watch.state.marker is not None and watch.state.marker.final) or any(
        names.get(watch.job_dir) in _FINAL_MARKERS for names in seen)


class PollLoop:
    """Watches one system's submitted jobs until each has ended; see the module docstring."""

    def __init__(self, machine: Machine, window: QueueWindow, recorder: Recorder, *,
                 extension: SurveyExtension | None = None) -> None:
        """:param extension: also asked by every poll that lists the queue (packing's queues)"""
        self.machine = machine
        self.window = window
        self.recorder = recorder
        self.extension = extension
        self._send, self._receive = anyio.create_memory_object_stream[Watch](math.inf)
        self._fetch_send, self._fetch_receive = anyio.create_memory_object_stream[_Finished](math.inf)
        self.watches: dict[str, Watch] = {}
        """Job dir -> watch, for every job the loop has taken and not seen end."""
        self._intervals: Counter[float] = Counter()
        """The ``check_interval`` of the watches, counted: the poll period without a pass over them all."""
        self._abandoned: list[Watch] = []
        """Watches taken whose waiter gave up, not yet forgotten (found without a pass over them all)."""
        self._note_abandoned = self._abandoned.append
        """Each taken watch's :attr:`~Watch.on_abandon` (one bound method shared by all of them)."""
        self._offsets: dict[str, int | None] = {}
        """Remote root -> bytes of its event log already read (None or absent: not yet)."""
        self._full_scan_at: dict[str, float] = {}
        """Remote root -> when its watched directories were last all looked at."""
        self._listings: dict[str, ListingDiff] = {}
        """Remote root -> its last queue listing (a poll parses only the lines that changed)."""
        self._unsettled: set[str] = set()
        """Job dirs a poll looks at whatever it hears: all but the jobs listed active as at their last
        look, scanned, with no final marker (:meth:`_settle`). The others are looked at only when a
        marker, an event line or their listing line changes, so a poll's work grows with what changed."""
        self._by_id: dict[str, str] = {}
        """Remote id -> job dir of every watched job (a changed listing line names its job)."""
        self._started: set[str] = set()
        """Job dirs of the watched jobs seen started: the ones :meth:`listing_interval` weighs, found
        without a pass over every watch (a quiet poll's cost must not grow with the jobs waiting)."""
        self._followers: dict[str, list[Watch]] = {}
        """Job dir -> the later watches of a job watched already (another wait of the session for the same
        job): each ends as the watch in :attr:`watches` ends (:meth:`_end`), or takes over if that one is
        given up, so no wait is dropped unwoken."""
        self._roots: Counter[str | None] = Counter()
        """Watched jobs per remote root (None: the system's current one)."""
        self._last_change = time.monotonic()
        self._listed_at = -math.inf
        self._durations: deque[float] = deque(maxlen=_DURATIONS)
        self.history: deque[PollRecord] = deque(maxlen=POLL_HISTORY)
        """The last polls, oldest first."""
        self.stopped_by: BaseException | None = None
        """Set by :meth:`stop_waiters`: the loop is gone, and every later wait raises this."""

    def watched_count(self) -> int:
        """Jobs handed to the loop and not yet seen to end."""
        return len(self.watches) + self._receive.statistics().current_buffer_used

    def watch(self, watch: Watch) -> None:
        """Hand ``watch`` to the loop without waiting (see :meth:`System.watch`)."""
        if self.stopped_by is not None:
            raise self.stopped_by
        self._send.send_nowait(watch)

    async def wait(self, watch: Watch) -> JobOutcome:
        """Hand ``watch`` to the loop and wait for its outcome (see :meth:`System.wait`)."""
        self.watch(watch)
        try:
            await watch.done.wait()
        finally:
            watch.abandon()  # after its end a no-op for the loop: it is no longer watched
        return watch.result()

    # ------------------------------------------------------------------ timing
    def base_interval(self) -> float:
        """The smallest ``check_interval`` of the watched jobs (at least :data:`MIN_POLL_INTERVAL`)."""
        return max(MIN_POLL_INTERVAL, min(self._intervals)) if self._intervals else 1.0

    def interval(self) -> float:
        """Seconds from one poll's start to the next: the base interval (see :meth:`base_interval`).

        A poll that does not list the queue reads files only (the event log, a few markers),
        so it keeps the ``check_interval`` promise: a finished job is seen within one interval.
        """
        return self.base_interval()

    def listing_interval(self, now: float | None = None) -> float:
        """Seconds between two polls that list the queue (a scheduler call).

        The base interval while things change, or while a job is missing from the queue (its
        grace period runs). After :data:`BACKOFF_AFTER` s without a change it grows
        (:data:`BACKOFF_SLOPE`) up to the system's ``poll_max_interval``, but never past the
        moment a running job is expected to end (its start plus the median duration of the
        system's last finished jobs) or reaches its time limit, so a job that dies then is seen soon.
        """
        now = time.monotonic() if now is None else now
        base = self.base_interval()
        quiet = now - self._last_change
        if (quiet <= BACKOFF_AFTER or self.window.leaving()  # a missing job is never settled:
                or any(w.state.missing_since is not None for w in self._watched(self._unsettled))):
            return base
        longest = max(base, self.machine.config.poll_max_interval)
        interval = min(longest, base + (quiet - BACKOFF_AFTER) * BACKOFF_SLOPE)
        running = [(w, w.state.started_at) for w in self._watched(self._started)
                   if w.phase is Phase.WATCHED and w.state.started_at is not None]
        limits = [started + w.max_time - now for w, started in running if w.max_time]
        if limits:  # a job killed at its time limit is listed as such only briefly
            interval = min(interval, max(base, min(limits)))
        if self._durations:
            typical = statistics.median(self._durations)
            due = [started + typical - now for _, started in running if started + 2 * typical > now]
            if due:
                interval = min(interval, max(base, min(due)))
        return interval

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Poll, and fetch beside it, until cancelled."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._fetch_loop)
            await self._poll_loop()

    async def _poll_loop(self) -> None:
        last_start = -math.inf
        while True:
            if not self.watches and not self.window.leaving():
                self._add(await self._receive.receive())
            self._take_new()
            due = last_start + self.interval() - time.monotonic()
            if due > 0:
                await anyio.sleep(due)
                self._take_new()
            if not self.window.leaving() and not any(w.phase is Phase.WATCHED for w in self.watches.values()):
                await anyio.sleep(self.base_interval())  # only fetches in flight: nothing to ask
                continue
            last_start = time.monotonic()
            record = PollRecord(started=time.time(), interval=self.interval())
            self.history.append(record)
            try:
                with anyio.CancelScope(shield=True):  # a poll's results are recorded even at close
                    changed = await self._poll_once(record)
            except (TransportError, SchedulerError) as exc:
                log.warning("%s: polling failed (%s); retrying", self.machine.name, exc)
                changed = []
            record.duration = time.monotonic() - last_start
            if changed:
                self._last_change = time.monotonic()
                with anyio.CancelScope(shield=True):
                    await self.recorder.progressed(changed)
            for watch, verdict in changed:
                if verdict.kind is VerdictKind.DIED:
                    self._end(watch)

    def stop_waiters(self, error: BaseException) -> None:
        """The loop stopped for good: wake every job waiting on it (taken or still in the stream)
        with ``error``, so none waits forever, and refuse later waits with it."""
        self.stopped_by = error
        self._take_new()
        for watch in list(self.watches.values()):
            watch.outcome = JobOutcome(None, QueueState.UNKNOWN, str(error), error=error)
            self._end(watch)

    def _add(self, watch: Watch) -> None:
        if not watch.abandoned:
            watch.watched_at = time.time()
            watch.state = watch.state.taken()
            watch.on_abandon = self._note_abandoned
            watching = self.watches.get(watch.job_dir)
            if watching is not None and not watching.abandoned:  # the same job, waited for twice
                self._followers.setdefault(watch.job_dir, []).append(watch)
                return
            self._forget(watching)
            self.watches[watch.job_dir] = watch
            self._intervals[watch.check_interval] += 1
            self._unsettled.add(watch.job_dir)
            self._roots[watch.remote_root] += 1
            if watch.remote_id:
                self._by_id[watch.remote_id] = watch.job_dir
            if watch.state.started_at is not None:
                self._started.add(watch.job_dir)
            # a job this driver re-attached to is in the queue already: it counts, room or not
            if watch.in_window:
                self.window.queued(watch.job_dir)
            self._last_change = time.monotonic()
            if watch.recorded_succeeded and watch.remote_root is not None:
                # a rerun whose local results are gone: no survey of 10^5 directories whose final markers
                # were recorded, the fetch brings each marker back and checks it (else it is looked at)
                watch.state = watch.state.recorded_succeeded()
                self._to_fetch(watch.remote_root, watch, _RECORDED_SUCCEEDED)

    def _take_new(self) -> None:
        while True:
            try:
                self._add(self._receive.receive_nowait())
            except anyio.WouldBlock:
                break
        abandoned = self._abandoned.copy()  # the list itself stays: every watch's on_abandon appends to it
        self._abandoned.clear()
        for watch in abandoned:
            if self.watches.get(watch.job_dir) is not watch:
                continue
            if watch.phase is Phase.FETCHING:
                self._abandoned.append(watch)  # its fetch ends it
            else:
                followers = self._followers.pop(watch.job_dir, [])
                self._end(watch)
                for follower in followers:  # the first still waited for takes over, the others follow it
                    self._add(follower)

    def _forget(self, watch: Watch | None) -> None:
        """Take ``watch`` out of :attr:`watches` (if it is there) and out of the counts and indexes kept beside it."""
        if watch is None or self.watches.get(watch.job_dir) is not watch:
            return
        del self.watches[watch.job_dir]
        self._intervals[watch.check_interval] -= 1
        if not self._intervals[watch.check_interval]:
            del self._intervals[watch.check_interval]
        self._unsettled.discard(watch.job_dir)
        self._started.discard(watch.job_dir)
        self._roots[watch.remote_root] -= 1
        if not self._roots[watch.remote_root]:
            del self._roots[watch.remote_root]
        if watch.remote_id and self._by_id.get(watch.remote_id) == watch.job_dir:
            del self._by_id[watch.remote_id]

    def _end(self, watch: Watch, *, maybe_listed: bool = False) -> None:
        """Forget ``watch`` (it ended, or its waiter gave up), free its room in the queue window, wake it
        (and the later watches of its job that follow it: :attr:`_followers`).

        :param maybe_listed: it finished, and the queue may still list it: its room is given back
            once a listing no longer has it active
        """
        followed = self.watches.get(watch.job_dir) is watch
        self._forget(watch)
        watch.state = watch.state.ended()
        if maybe_listed:
            self.window.ended(watch.job_dir, watch.remote_id)
        else:
            self.window.left([watch.job_dir])
        watch.done.set()
        for follower in self._followers.pop(watch.job_dir, []) if followed else ():
            follower.outcome, follower.state = watch.outcome, follower.state.ended()
            follower.done.set()

    async def _poll_once(self, record: PollRecord) -> list[tuple[Watch, Verdict]]:
        """One command per remote root; finished jobs go to the fetch task, the other changes are returned."""
        machine = self.machine
        default_root = await machine.remote_root()
        roots = {root or default_root for root in self._roots}
        unsettled: dict[str, list[Watch]] = {}
        for watch in self._watched(self._unsettled):
            if watch.phase is Phase.WATCHED:
                unsettled.setdefault(watch.remote_root or default_root, []).append(watch)
        now = time.monotonic()
        # a listing is skipped while the scheduler's rate limit has no token to spare: waiting for
        # one would hold up this poll, and results come through the event log and the markers
        listing = (now - self._listed_at >= self.listing_interval(now) - 0.5 * MIN_POLL_INTERVAL
                   and machine.scheduler_call_free())
        if not roots and self.window.leaving():
            roots, listing = {default_root}, True  # only finished jobs still maybe listed: list the queue
        if listing:
            self._listed_at = now
        record.listed = listing
        changed: list[tuple[Watch, Verdict]] = []
        for root in roots:
            changed.extend(await self._poll_root(root, default_root, unsettled.get(root, []), listing, record))
        return changed

    def _all_watched(self, root: str, default_root: str) -> list[Watch]:
        """Every watched job under ``root`` (a full look: every :data:`FULL_SCAN_SECONDS`)."""
        return [w for w in self.watches.values() if w.phase is Phase.WATCHED and (w.remote_root or default_root) == root]

    def _watched(self, job_dirs: Iterable[str]) -> list[Watch]:
        return [w for d in job_dirs if (w := self.watches.get(d)) is not None]

    def _to_look_at(self, root: str, default_root: str, unsettled: Sequence[Watch], found: QueueSurvey,
                    events: dict[str, str], everything: bool) -> Sequence[Watch]:
        """The watched jobs under ``root`` this poll may have news of: the unsettled ones, those a marker
        or an event line names, and those whose listing line changed (all, when ``everything``)."""
        if everything:
            return self._all_watched(root, default_root)
        look = {w.job_dir: w for w in unsettled}
        ids = found.changed or ()
        for job_dir in (*found.markers, *events, *(self._by_id.get(i) for i in ids)):
            if job_dir is not None and job_dir not in look and (watch := self.watches.get(job_dir)) is not None \
                    and watch.phase is Phase.WATCHED and (watch.remote_root or default_root) == root:
                look[job_dir] = watch
        return list(look.values())

    def _settle(self, watch: Watch) -> None:
        """Keep ``watch`` out of the polls' looks while nothing speaks of it: it is listed active as at its
        last look, its markers were scanned and none is final (a packed chunk, whose states the pack's
        own listing gives, and a job without a queue id are looked at every poll)."""
        state = watch.state
        if (watch.phase is Phase.WATCHED and watch.in_window and watch.remote_id and state.scanned
                and state.queue_active and state.missing_since is None
                and not (state.marker is not None and state.marker.final)):
            self._unsettled.discard(watch.job_dir)
        elif watch.phase is not Phase.ENDED:
            self._unsettled.add(watch.job_dir)

    async def _poll_root(self, root: str, default_root: str, unsettled: Sequence[Watch], listing: bool,
                         record: PollRecord) -> list[tuple[Watch, Verdict]]:
        """One command for the jobs under ``root``: the event log, some markers, the queue if ``listing``.

        Looks at the ``unsettled`` jobs and those the answer has news of (:meth:`_to_look_at`); at every
        watched job every :data:`FULL_SCAN_SECONDS`, and when the listing cannot say what changed.
        """
        machine = self.machine
        now = time.monotonic()
        full = now - self._full_scan_at.get(root, -math.inf) >= FULL_SCAN_SECONDS
        scan = self._all_watched(root, default_root) if full else \
            [w for w in unsettled if not w.state.scanned or not w.state.queue_active]
        offset = self._offsets.get(root)
        machine.stats["poll_commands"] += 1
        machine.stats["marker_scans"] += len(scan)
        diff = self._listings.setdefault(root, ListingDiff(machine.scheduler)) if listing else None
        found = await machine.survey([w.job_dir for w in scan], root, events_from=offset, queue=listing,
                                     extension=self.extension, listing=diff)
        try:
            if listing:
                self.window.listed(found.states)
            if full:
                self._full_scan_at[root] = now
            events = self._read_events(root, offset, found.events)
            for watch in scan:
                watch.state = watch.state.after_scan()
            look = self._to_look_at(root, default_root, unsettled, found, events,
                                    everything=full or (listing and found.changed is None))
            accounted = await self._vanished_accounting(root, look, found.states, (found.markers, events)) \
                if listing else {}
            return self._judge(root, look, found, events, accounted, listing, record)
        except BaseException:
            if diff is not None:  # its jobs were not all looked at: the next listing is read whole
                diff.lost()
            raise

    def _judge(self, root: str, look: Sequence[Watch], found: QueueSurvey, events: dict[str, str],
               accounted: Mapping[str, Accounted], listing: bool, record: PollRecord) -> list[tuple[Watch, Verdict]]:
        """Move each looked-at job's state on from this poll's answer (:func:`observe`); finished jobs go
        to the fetch task, the other changes are returned."""
        machine = self.machine
        now = time.monotonic()
        changed: list[tuple[Watch, Verdict]] = []
        for watch in look:
            seen = (found.markers.get(watch.job_dir), events.get(watch.job_dir))
            if unchanged(watch.state, remote_id=watch.remote_id, seen=seen, states=found.states, listed=listing):
                self._settle(watch)
                continue
            watch.state, verdict, step = observe(
                watch.state, remote_id=watch.remote_id, seen=seen,
                states=found.states, listed=listing, now=now, grace=machine.config.died_grace_seconds,
                where=machine.name, detail=ended.detail() if (ended := accounted.get(watch.job_dir)) else "",
                ending=ended.ending if ended else None)
            if watch.state.started_at is not None:
                self._started.add(watch.job_dir)
            if step is Step.FETCH:
                self._finished_now(root, watch, verdict, now, record)
            elif step is Step.DIED:
                log.info("job %s on %s: died: %s", watch.job_dir, machine.name, verdict.message)
                watch.outcome = JobOutcome(None, verdict.queue_state, verdict.message, cause=verdict.cause)
                changed.append((watch, verdict))
            elif step is Step.STARTED:
                changed.append((watch, verdict))
            self._settle(watch)
        return changed

    def _finished_now(self, root: str, watch: Watch, verdict: Verdict, now: float, record: PollRecord) -> None:
        """``watch`` has its final marker: its run time counted, its files to the fetch task."""
        if watch.state.started_at is not None:
            self._durations.append(now - watch.state.started_at)
        self._to_fetch(root, watch, verdict)
        record.finished[watch.job_dir] = watch.watched_at or record.started

    def _to_fetch(self, root: str, watch: Watch, verdict: Verdict) -> None:
        """``watch`` finished as ``verdict`` says (seen by a poll, or recorded by an earlier run): to the fetch task."""
        watch.outcome = JobOutcome(verdict.marker, QueueState.FINISHED)
        self._fetch_send.send_nowait((root, watch, verdict))

    def _read_events(self, root: str, offset: int | None, read: EventLogRead | None) -> dict[str, str]:
        """Job dir -> marker from the event log lines this poll read under ``root``, moving its offset on."""
        if read is None:
            return {}
        if offset is None or read.size < offset:
            if offset is not None:  # the log was replaced: what it held is read from the markers
                log.info("%s: the event log in %s shrank; looking at every job's markers", self.machine.name, root)
                self._full_scan_at.pop(root, None)
            self._offsets[root] = read.size
            return {}
        self._offsets[root] = offset + read.consumed
        return read.markers

    def _fetch_failed_permanently(self, group: Sequence[tuple[Watch, Verdict]], local_root: Path,
                                  failure: BaseException) -> bool:
        """The one place a fetch failure is judged permanent (a full local disk, :mod:`~wfl_async.failures`):
        then each job of ``group`` ends with the error at once (nothing half-written was kept: a fetch
        writes each file under a temporary name and renames it once complete), and True is returned."""
        cause = permanent_cause(failure)
        if cause is None:
            return False
        error = permanent_error(
            cause, system="local", path=str(local_root), doing=f"fetching the results of {len(group)} job(s) "
            f"of {self.machine.name}", detail=str(failure), consequence=(
                "No result was half-written (a fetched file is renamed into place only once complete); the "
                "results stay in the jobs' remote directories."))
        log.error("%s", error)
        for watch, _ in group:
            assert watch.outcome is not None
            watch.outcome.error = error
            self._end(watch)
        return True

    async def _vanished_accounting(self, root: str, watches: Sequence[Watch], states: MutableMapping[str, QueueState] | None,
                                   seen: Sequence[dict[str, str]]) -> dict[str, Accounted]:
        """Job dir -> how it ended, for jobs the listing ``states`` no longer has active and that wrote
        no final marker, by the scheduler's accounting (with the exit code); their state is put into
        ``states``, so a job killed at its time limit is known as such at once, not after the grace
        as "no longer listed". A job whose final marker this poll saw (``seen``: the markers and the
        event log's lines, job dir -> marker name) finished: no command is spent on it, so a run
        whose jobs all end well asks the accounting nothing."""
        if states is None:
            return {}
        unfinished = [w for w in watches if w.remote_id and states.get(w.remote_id) not in ACTIVE_STATES
                      and not _finished(w, seen)]
        found = self._packed_ends(unfinished, states)
        found.update(await self._own_job_ends(root, unfinished, states))
        return found

    def _packed_ends(self, unfinished: Sequence[Watch], states: MutableMapping[str, QueueState]) -> dict[str, Accounted]:
        """Packed chunks among ``unfinished`` killed with their worker at a limit, as their pack tells."""
        found: dict[str, Accounted] = {}
        if self.extension is None:
            return found
        for watch in unfinished:
            if not watch.in_window and (ended := self.extension.accounted(watch.remote_id or "")) is not None:
                states[watch.remote_id or ""] = ended.state
                found[watch.job_dir] = ended
        return found

    async def _own_job_ends(self, root: str, unfinished: Sequence[Watch],
                            states: MutableMapping[str, QueueState]) -> dict[str, Accounted]:
        """How the scheduler jobs of their own among ``unfinished`` ended (a packed chunk's worker is one),
        by the scheduler's accounting: one command for all of them."""
        vanished = {w.remote_id: w.job_dir for w in unfinished if w.in_window and w.remote_id}
        if not vanished:
            return {}
        found: dict[str, Accounted] = {}
        dirs = {remote_id: f"{root}/{job_dir}" for remote_id, job_dir in vanished.items()}
        for remote_id, ended in (await self.machine.accounting(dirs)).items():
            job_dir = vanished.get(remote_id)
            if job_dir is not None and ended.work_dir.rstrip("/") in ("", f"{root}/{job_dir}"):
                states[remote_id] = ended.state
                found[job_dir] = ended
        return found

    # ------------------------------------------------------------------ fetching
    async def _fetch_loop(self) -> None:
        slots = anyio.Semaphore(FETCHES_IN_FLIGHT)
        async with anyio.create_task_group() as fetches:
            async for first in self._fetch_receive:
                await slots.acquire()  # a batch takes what arrived while the earlier fetches ran
                batch = [first]
                while len(batch) < _FETCH_JOBS:
                    try:
                        batch.append(self._fetch_receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                fetches.start_soon(self._fetch_in_slot, batch, slots)

    async def _fetch_in_slot(self, batch: Sequence[_Finished], slots: anyio.Semaphore) -> None:
        try:
            with anyio.CancelScope(shield=True):  # fetched results are recorded even at close
                await self._fetch(batch)
        finally:
            slots.release()

    async def _fetch(self, batch: Sequence[_Finished]) -> None:
        """Bring back the files of ``batch``; record and wake each job whose final marker came."""
        groups: dict[tuple[str, Path, bool], list[tuple[Watch, Verdict]]] = {}
        for root, watch, verdict in batch:
            groups.setdefault((root, watch.local_root, watch.bundled), []).append((watch, verdict))
        for (root, local_root, bundled), group in groups.items():
            # the final marker comes too: it holds the size and sha256 the result is checked against
            paths = [f"{w.job_dir}/{name}" for w, _ in group for name in (*layout.FETCH_ON_FINISH, *w.fetch)]
            self.machine.stats["fetch_commands"] += -(-len(paths) // FETCH_PATHS)
            try:
                came = await (self._bundle(root, paths, local_root) if bundled else self._files(root, paths, local_root))
            except (TransportError, OSError, tarfile.TarError) as exc:
                if self._fetch_failed_permanently(group, local_root, exc):
                    continue
                log.warning("%s: fetching %d finished job(s) failed (%s); the next poll tries again",
                            self.machine.name, len(group), exc)
                for watch, _ in group:
                    watch.state = watch.state.fetch_failed()
                continue
            done: list[tuple[Watch, Verdict]] = []
            for watch, verdict in group:
                assert verdict.marker is not None and watch.outcome is not None
                files = came.get(watch.job_dir)
                if files is not None and MARKER_FILES[verdict.marker] in files[1]:
                    watch.outcome.files = files[0]
                    done.append((watch, verdict))
                else:  # an event line of an earlier run of this directory: look at the markers again
                    log.info("job %s on %s: no final marker to fetch; looking again", watch.job_dir, self.machine.name)
                    watch.state, watch.outcome = watch.state.no_final_marker(), None
            if done:
                await self.recorder.progressed(done)
            self._last_change = time.monotonic()
            for watch, _ in done:
                self._end(watch, maybe_listed=True)

    async def _files(self, root: str, paths: Sequence[str], local_root: Path) -> dict[str, tuple[None, set[str]]]:
        """Fetch ``paths`` as files of their own: job dir -> (None, the names that came)."""
        came: dict[str, tuple[None, set[str]]] = {}
        for path in await self.machine.transport.download(root, paths, local_root):
            job_dir, _, name = path.rpartition("/")
            came.setdefault(job_dir, (None, set()))[1].add(name)
        return came

    async def _bundle(self, root: str, paths: Sequence[str],
                      local_root: Path) -> dict[str, tuple[BundledFiles, frozenset[str]]]:
        """Fetch ``paths`` into one bundle file per command: job dir -> (its files, in memory; their names)."""
        came: dict[str, tuple[BundledFiles, frozenset[str]]] = {}
        for stream in await self.machine.transport.fetch_streams(root, paths):
            saved = await anyio.to_thread.run_sync(save_bundle, local_root, stream,
                                                   limiter=self.machine.transport.file_threads())
            came.update((job_dir, (files, files.names())) for job_dir, files in saved.items())
        return came
