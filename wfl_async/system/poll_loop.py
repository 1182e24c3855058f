"""The poll loop of one system: every watched job checked in one remote command per poll.

A job's coroutine calls :meth:`System.wait <wfl_async.system.System.wait>`, which puts its
:class:`~wfl_async.system.requests.Watch` on this loop's stream and waits on the watch's own
event. The loop (started by :meth:`System.serve`):

1. waits until some job is watched; sleeps until one interval (the smallest
   ``check_interval``, at least 0.2 s) after the last poll;
2. sends one command per remote root: the scheduler's listing of the user's jobs and the
   marker of every watched job directory (:meth:`System.survey
   <wfl_async.system.System.survey>`);
3. :func:`~wfl_async.jobs.states.classify` each job; every finished job's files come back in
   one stream (:meth:`Transport.download <wfl_async.transport.base.Transport.download>`);
   the changes are handed to ``System.on_progress`` (one database transaction); each job
   that ended is woken.

A failing command is logged and retried at the next poll; it never fails a job (a failing
status command makes no job died: the jobs are taken as still active).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ..errors import SchedulerError, TransportError
from ..jobs import layout
from ..jobs.states import QueueState, Verdict, VerdictKind, classify
from ..scheduler.base import MAX_BATCH
from .requests import JobOutcome, Watch

if TYPE_CHECKING:
    from .system import System

__all__ = ["MIN_POLL_INTERVAL", "PollLoop"]

log = logging.getLogger(__name__)

FETCH_BATCH = 100
"""Finished jobs per fetch command (each names ~6 files): well under the 128 kB a single shell word may hold."""

MIN_POLL_INTERVAL = 0.2
"""Seconds: no system is polled more often, whatever ``check_interval`` a job asks for."""


class PollLoop:
    """Watches one system's submitted jobs until each has ended; see the module docstring."""

    def __init__(self, system: System) -> None:
        self.system = system
        self._send, self._receive = anyio.create_memory_object_stream[Watch](math.inf)
        self.watches: dict[str, Watch] = {}
        """Job dir -> watch, for every job the loop has taken and not seen end."""

    def watched_count(self) -> int:
        """Jobs handed to the loop and not yet seen to end."""
        return len(self.watches) + self._receive.statistics().current_buffer_used

    async def wait(self, watch: Watch) -> JobOutcome:
        """Hand ``watch`` to the loop and wait for its outcome (see :meth:`System.wait`)."""
        self._send.send_nowait(watch)
        try:
            await watch.done.wait()
        finally:
            watch.abandoned = True
        assert watch.outcome is not None
        return watch.outcome

    def interval(self) -> float:
        """Seconds between two polls: the smallest ``check_interval`` of the watched jobs."""
        intervals = [w.check_interval for w in self.watches.values()]
        return max(MIN_POLL_INTERVAL, min(intervals)) if intervals else 1.0

    async def run(self) -> None:
        """Poll until cancelled."""
        last_poll = -math.inf
        while True:
            if not self.watches:
                self._add(await self._receive.receive())
            self._take_new()
            due = last_poll + self.interval() - time.monotonic()
            if due > 0:
                await anyio.sleep(due)
                self._take_new()
            if not self.watches:
                continue
            try:
                with anyio.CancelScope(shield=True):  # a poll's results are recorded even at close
                    changed = await self._poll_once()
            except (TransportError, SchedulerError) as exc:
                log.warning("%s: polling failed (%s); retrying", self.system.name, exc)
                changed = []
            finally:
                last_poll = time.monotonic()
            if changed and self.system.on_progress is not None:
                with anyio.CancelScope(shield=True):
                    await self.system.on_progress(changed)
            for watch, verdict in changed:
                if verdict.kind in (VerdictKind.FINISHED, VerdictKind.DIED):
                    self.watches.pop(watch.job_dir, None)
                    watch.done.set()

    def _add(self, watch: Watch) -> None:
        if not watch.abandoned:
            self.watches[watch.job_dir] = watch

    def _take_new(self) -> None:
        while True:
            try:
                self._add(self._receive.receive_nowait())
            except anyio.WouldBlock:
                break
        for job_dir in [d for d, w in self.watches.items() if w.abandoned]:
            del self.watches[job_dir]

    async def _poll_once(self) -> list[tuple[Watch, Verdict]]:
        """One status round trip per remote root for every watched job, then one fetch per root."""
        system = self.system
        default_root = await system.remote_root()
        by_root: dict[str, list[Watch]] = {}
        for watch in list(self.watches.values())[:MAX_BATCH * 10]:
            by_root.setdefault(watch.remote_root or default_root, []).append(watch)
        changed: list[tuple[Watch, Verdict]] = []
        for root, watches in by_root.items():
            system.stats["poll_commands"] += 1
            found = await system.survey([w.job_dir for w in watches], root)
            now = time.monotonic()
            finished: list[Watch] = []
            for watch in watches:
                verdict = classify(remote_id=watch.remote_id, marker=found.markers.get(watch.job_dir),
                                   states=found.states, grace=system.config.died_grace_seconds, where=system.name,
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
                    log.info("job %s on %s: died: %s", watch.job_dir, system.name, verdict.message)
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
            # at most FETCH_BATCH jobs per command: many jobs finishing between two polls (packed
            # chunks do) must not make one command line longer than the remote shell takes
            for start in range(0, len(group), FETCH_BATCH):
                # the final marker comes too: it holds the size and sha256 the result is checked against
                paths = [f"{w.job_dir}/{name}" for w in group[start:start + FETCH_BATCH]
                         for name in (*layout.FETCH_ON_FINISH, *w.fetch)]
                self.system.stats["fetch_commands"] += 1
                await self.system.transport.download(root, paths, local_root)
