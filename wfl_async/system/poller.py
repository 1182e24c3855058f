"""Coalesced polling: one status command per interval for every outstanding job of a system.

One waiting job at a time is the *poll leader*: per interval it runs one command that lists
the user's queue and which job directories hold a marker (:meth:`System.survey`), then
fetches every job that finished in one tar stream. When the leader's own job is done it
steps down and another waiter takes over (waiting out the interval its predecessor began),
so results stream out as jobs finish and there is no background task to clean up.

A job missing from the queue is not done until its marker says so; without a marker it is
called died after the system's ``died_grace_seconds`` (queues forget finished jobs,
shared filesystems lag).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ..errors import SchedulerError, TransportError
from ..jobs import layout
from ..scheduler.states import ACTIVE_STATES, QueueState
from .batcher import MAX_BATCH
from .requests import JobOutcome, Watch

if TYPE_CHECKING:
    from .system import System

__all__ = ["Poller", "ProgressCallback"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Sequence[Watch]], Awaitable[None]]


class Poller:
    """The waiting side of one :class:`System`."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.on_progress: ProgressCallback | None = None
        self._watches: dict[str, Watch] = {}
        self._leader = False
        self._last_poll = -float("inf")
        """When the last poll ended (monotonic); the next is due one interval later."""
        self._changed = anyio.Condition()

    def watched_count(self) -> int:
        """Jobs submitted and not yet seen to finish."""
        return len(self._watches)

    def running_count(self) -> int:
        """Watched jobs whose worker has started."""
        return sum(1 for w in self._watches.values() if w.started)

    def started_count(self, job_dirs: Collection[str]) -> int:
        """How many of ``job_dirs`` are watched and started (one call's running jobs, for its progress line)."""
        return sum(1 for d in job_dirs if (w := self._watches.get(d)) is not None and w.started)

    def poll_interval(self) -> float:
        intervals = [w.check_interval for w in self._watches.values()]
        return max(0.2, min(intervals)) if intervals else 1.0

    async def wait(self, watch: Watch) -> JobOutcome:
        """Wait until ``watch``'s job has a final marker (its files fetched) or has died.

        Cancellation (including a caller's timeout) leaves the job queued and resumable.
        """
        self._watches[watch.job_dir] = watch
        try:
            while watch.outcome is None:
                if not self._leader:
                    self._leader = True
                    try:
                        await self._lead(watch)
                    finally:
                        self._leader = False
                        async with self._changed:
                            self._changed.notify_all()
                else:
                    async with self._changed:
                        if watch.outcome is None and self._leader:
                            await self._changed.wait()
            return watch.outcome
        finally:
            self._watches.pop(watch.job_dir, None)

    async def _lead(self, own: Watch) -> None:
        while own.outcome is None:
            # a waiter taking over from a leader whose job just finished waits out the interval
            # its predecessor began: one status command per interval, whoever leads
            due = self._last_poll + self.poll_interval() - time.monotonic()
            if due > 0:
                await anyio.sleep(due)
            try:
                changed = await self._poll_once()
            except (TransportError, SchedulerError) as exc:
                log.warning("%s: polling failed (%s); retrying", self.system.name, exc)
                changed = []
            finally:
                self._last_poll = time.monotonic()
            if changed:
                if self.on_progress is not None:
                    await self.on_progress(changed)
                async with self._changed:
                    self._changed.notify_all()

    async def _poll_once(self) -> list[Watch]:
        """One status round trip for every watched job, then one fetch for the finished ones."""
        root = await self.system.remote_root()
        watches = [w for w in self._watches.values() if w.outcome is None][:MAX_BATCH * 10]
        if not watches:
            return []
        self.system.stats["poll_commands"] += 1
        found = await self.system.survey([w.job_dir for w in watches], root)
        queue_ok = found.states is not None
        queue = found.states or {}
        markers = found.markers

        finished: list[Watch] = []
        changed: list[Watch] = []
        now = time.monotonic()
        for watch in watches:
            marker = markers.get(watch.job_dir)
            if marker in ("succeeded", "failed"):
                finished.append(watch)
                continue
            if marker == "started" and not watch.started:
                watch.started = True
                changed.append(watch)
            state = queue.get(watch.remote_id or "")
            if state in ACTIVE_STATES or not queue_ok:
                watch.missing_since = None
                continue
            # gone from the queue (or ended there) without a final marker: grace period, then died
            if watch.missing_since is None:
                watch.missing_since = now
            elif now - watch.missing_since > self.system.config.died_grace_seconds:
                watch.outcome = JobOutcome(None, state, f"job {watch.remote_id} left the queue of {self.system.name} "
                                           f"({state.value if state else 'no longer listed'}) without a final "
                                           f"marker for {self.system.config.died_grace_seconds:.0f} s")
                changed.append(watch)
        if finished:
            await self._fetch(root, finished, markers)
            changed.extend(finished)
        return changed

    async def _fetch(self, root: str, finished: list[Watch], markers: dict[str, str]) -> None:
        by_local_root: dict[Path, list[Watch]] = {}
        for watch in finished:
            by_local_root.setdefault(watch.local_root, []).append(watch)
        for local_root, group in by_local_root.items():
            # [io] the final marker comes too: it holds the size and sha256 the result is checked against
            paths = [f"{w.job_dir}/{name}" for w in group for name in (*layout.FETCH_ON_FINISH, *w.fetch)]
            self.system.stats["fetch_commands"] += 1
            await self.system.transport.download(root, paths, local_root)
        for watch in finished:
            watch.outcome = JobOutcome(markers[watch.job_dir], QueueState.FINISHED)
