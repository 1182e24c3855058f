"""The session: configuration, the jobs database and its writer, and the systems with their loops.

Every job coroutine on an event loop shares one session, hence one ssh connection per
host and one submit loop and one poll loop per system, whatever operations it belongs to.
The session owns one task group, in which the database's writer task, each system's
:meth:`~wfl_async.system.System.serve` and its packing coordinator's
:meth:`~wfl_async.pack.coordinator.PackCoordinator.serve` run (each started with
``TaskGroup.start`` on first use); closing the session ends them, then closes connections and
the database. The session builds each system and its coordinator with everything they need,
including the :class:`DatabaseRecorder` their loops report to: nothing is hooked in afterwards.

Sessions are reference counted per event loop: ``async with session_scope() as s`` opens
one (or joins the open one) and the last scope to leave closes it. Since the scopes may be
entered and left by different tasks (``asyncio.gather`` of two jobs), the task group lives
in a host task of its own. The registry is keyed on the asyncio loop because asyncssh, the
ssh transport, is asyncio-only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ._private import private_dir
from .config import ProjectConfig, SystemConfig, load_config
from .jobs.database import JobsDatabase
from .jobs.fetched import FetchedStore
from .jobs.owner import process_owner, release_owner
from .jobs.run_record import read_run_record
from .jobs.states import FINISHED, JobStatus, Verdict, VerdictKind, status_update
from .pack.coordinator import PackCoordinator
from .pack.listings import PackListings
from .scheduler import Scheduler, get_scheduler
from .system import SubmitRequest, System, Watch
from .system.paths import project_key
from .system.transport_for import build_transport
from .transport.base import Transport

__all__ = ["DB_NAME", "STAGE_DIR_NAME", "DatabaseRecorder", "Session", "session_scope"]

log = logging.getLogger(__name__)

DB_NAME = "wfl_async_jobs.db"
"""The jobs database, in the project's local stage dir."""
STAGE_DIR_NAME = "wfl_async_stage"
"""In the local stage dir: each job's staged task and fetched results, ``<STAGE_DIR_NAME>/<job dir>``."""
COSTS_EVERY = 10.0
"""Seconds between two records of what the session's commands cost (and one at its end)."""


class Session:
    """Shared state of one event loop. Create through :func:`session_scope`."""

    def __init__(self, config: ProjectConfig) -> None:
        self.config = config
        self.owner = process_owner()
        self.db = JobsDatabase(config.local_stage_dir / DB_NAME)
        self.stage_root = config.local_stage_dir / STAGE_DIR_NAME
        self.fetched = FetchedStore(self.stage_root)
        """Where a finished job's fetched files are (its own directory, or a fetched batch's bundle)."""
        self._systems: dict[str, System] = {}
        self._packing: dict[str, PackCoordinator] = {}
        self._served: set[str] = set()
        """Systems whose loops and packing coordinator were started (:meth:`serving`)."""
        self._recorder = DatabaseRecorder(self.db, after_progress=self._record_costs_when_due)
        self._transports: dict[tuple[str | None, tuple[str, ...] | None, str], Transport] = {}
        self._users = 0
        self._tasks: anyio.abc.TaskGroup | None = None
        self._host: asyncio.Task[None] | None = None
        self._closing = anyio.Event()
        self._start_lock = anyio.Lock()
        self._opened_at = time.time()
        self._costs_recorded_at = -math.inf

    # ------------------------------------------------------------------ lifetime
    async def open(self) -> None:
        """Open the database and start the host task holding the session's task group."""
        async with self._start_lock:
            if self._host is None:
                await self._open()

    async def _open(self) -> None:
        private_dir(self.stage_root)  # staged tasks and fetched results: their owner's only
        await self.db.open()
        ready = anyio.Event()
        self._host = asyncio.get_running_loop().create_task(self._hold(ready))
        await ready.wait()

    async def _hold(self, ready: anyio.Event) -> None:
        """The host task: the writer outlives the systems' loops, which record their last changes."""
        async with anyio.create_task_group() as writer:
            await writer.start(self.db.serve)
            try:
                async with anyio.create_task_group() as services:
                    self._tasks = services
                    ready.set()
                    await self._closing.wait()
                    services.cancel_scope.cancel()
            except Exception as exc:  # a loop stopped on a bug (a system's own loops catch theirs)
                self._stop_every_waiter(exc)
            finally:
                self._tasks = None
            writer.cancel_scope.cancel()

    def _stop_every_waiter(self, exc: Exception) -> None:
        """The last resort when a loop of the session stopped on an unexpected error: its siblings
        were cancelled with it, so every job waiting on any system is woken with the error."""
        for name, system in self._systems.items():
            error = system.stop_waiters(exc, "packing")
            self._packing[name].stop_waiters(error)

    async def aclose(self) -> None:
        """End the loops and the writer (each finishes what it has taken on), then close everything."""
        if self._host is not None and self._systems:
            self._record_costs()
        self._closing.set()
        if self._host is not None:
            await self._host
            self._host = None
        for transport in self._transports.values():
            await transport.aclose()
        await self.db.close()
        release_owner(self.owner)

    # ------------------------------------------------------------------ systems
    def system(self, name: str) -> System:
        """The :class:`System` called ``name``; raises ConfigurationError for an unknown name."""
        if name not in self._systems:
            config = self.config.system(name)
            listings = PackListings()  # packed chunks: their queues are read by every survey
            system = System(config, self._transport(config), _scheduler_for(config),
                            project_key(self.config.local_stage_dir), recorder=self._recorder,
                            survey_extension=listings)
            self._packing[name] = PackCoordinator(system.machine, system.window, self._recorder, system.submit,
                                                  listings)
            self._systems[name] = system
        return self._systems[name]

    def packing(self, name: str) -> PackCoordinator:
        """The packing coordinator of the system called ``name`` (:mod:`wfl_async.pack`)."""
        self.system(name)
        return self._packing[name]

    async def serving(self, name: str) -> System:
        """The system called ``name``, its loops and its packing coordinator running in the session's task group."""
        system = self.system(name)
        if name in self._served and system.serving and system.stopped_by is None:
            return system  # every chunk asks: no lock (and no checkpoint) once its loops run
        async with self._start_lock:
            if system.stopped_by is not None:  # its loops stopped on a bug: not started again on stale state
                raise system.stopped_by
            if not system.serving:
                if self._tasks is None:
                    raise RuntimeError("the session is closed")
                await self._tasks.start(system.serve)
                await self._tasks.start(self._packing[name].serve)
                self._served.add(name)
        return system

    @property
    def systems(self) -> dict[str, System]:
        return dict(self._systems)

    def _transport(self, config: SystemConfig) -> Transport:
        """One transport per host, ssh config and kind, whichever systems share them."""
        key = (config.host, tuple(config.ssh_config) if config.ssh_config else None, config.transport)
        if key not in self._transports:
            self._transports[key] = build_transport(config)
        return self._transports[key]



    # ------------------------------------------------------------------ costs
    def _record_costs_when_due(self) -> None:
        """After a poll's changes are recorded: the costs again, if :data:`COSTS_EVERY` has passed."""
        if time.monotonic() - self._costs_recorded_at > COSTS_EVERY:
            self._record_costs()

    def _record_costs(self) -> None:
        """What this session's commands have cost so far, for ``wfl-async report`` (a run in progress too)."""
        self._costs_recorded_at = time.monotonic()
        self.db.record_costs_soon(self.owner, self._opened_at, self.costs())

    def costs(self) -> dict[str, Any]:
        """What this session's commands have cost so far: per system its counters, per host its commands."""
        transports = {}
        for (host, _, _), transport in self._transports.items():
            stats = transport.stats
            transports[host or "local"] = {
                "connections": stats.connections_opened, "commands": stats.commands_run,
                "seconds": round(sum(r.duration for r in stats.records), 3), **stats.by_kind()}
        return {"systems": {name: dict(system.stats) for name, system in self._systems.items()},
                "transports": transports}


class DatabaseRecorder:
    """The :class:`~wfl_async.system.recorder.Recorder` of a session's systems: reports go to the jobs database."""

    def __init__(self, db: JobsDatabase, *, after_progress: Callable[[], None] | None = None) -> None:
        """:param after_progress: called after each poll's changes are recorded (the session's cost record)"""
        self.db = db
        self._after_progress = after_progress
        self._files = anyio.CapacityLimiter(1)
        """A thread of its own for reading fetched markers: never behind the call's staging in anyio's pool."""

    def submitted(self, requests: Sequence[SubmitRequest], root: str) -> None:
        """Recorded by the submit loop itself, so a job whose caller was cancelled is recorded too (one
        write for a whole enqueue command's chunks)."""
        now = time.time()
        self.db.update_soon([(request.key, {
            "status": JobStatus.SUBMITTED, "remote_id": request.remote_id, "remote_root": root,
            "route": request.route, "pack_id": request.pack_id, "submitted_at": now,
            "cores": request.node_dict.get("num_cores"), "max_time": request.max_time})
            for request in requests if request.key])

    async def progressed(self, changes: Sequence[tuple[Watch, Verdict]]) -> None:
        """One database write per poll for every job whose state moved, with when it moved
        (for ``wfl-async report``): started as first seen, then as its fetched markers say.

        Queued for the database's writer, not waited for: a fetch never waits behind the writer
        (issue 16: results reached the caller seconds after their fetch), and a write the caller
        makes after it wakes is queued after this one, so it is applied after it (a failure is logged)."""
        updates = []
        now = time.time()
        fetched: list[tuple[dict[str, Any], Path]] = []
        for watch, verdict in changes:
            update = status_update(verdict)
            if update is None or not watch.key:
                continue
            if update["status"] is JobStatus.STARTED:
                update["started_at"] = now
            elif verdict.kind is VerdictKind.FINISHED:
                update["fetched_at"] = now
                files = watch.outcome.files if watch.outcome is not None else None
                if files is not None:  # in memory: a few lookups, no file
                    update.update(read_run_record(files))
                else:
                    fetched.append((update, watch.local_root / watch.job_dir))
            updates.append((watch.key, update))
        if fetched:  # the fetched markers' times and content: a few stats per job, off the event loop
            records = await anyio.to_thread.run_sync(lambda: [read_run_record(d) for _, d in fetched],
                                                    limiter=self._files)
            for (update, _), record in zip(fetched, records, strict=True):
                update.update(record)
        self.db.update_soon(updates)
        if self._after_progress is not None:
            self._after_progress()
    async def ended(self, job_dirs: Sequence[str]) -> set[str]:
        """Job dirs whose records say they never run again (a rerun creates them afresh, queueing them again)."""
        return {job_dir for job_dir, status in (await self.db.statuses(job_dirs)).items() if status in FINISHED}


def _scheduler_for(config: SystemConfig) -> Scheduler:
    if config.scheduler == "local":
        return get_scheduler("local", slot_dir=None, max_jobs=config.partitions[next(iter(config.partitions))]
                             ["num_cores"])
    return get_scheduler(config.scheduler)


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Session] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def session_scope(cwd: Path | None = None) -> AsyncIterator[Session]:
    """Open the event loop's session, or join it if already open; close it when the last user leaves."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None:
        session = _sessions[loop] = Session(load_config(cwd))
    session._users += 1
    try:
        # shielded: a caller cancelled while the session opens must not leave it half open
        with anyio.CancelScope(shield=True):
            await session.open()
        yield session
    finally:
        session._users -= 1
        if session._users == 0:
            _sessions.pop(loop, None)
            # shielded: on Ctrl-C the loops must end and the database thread be stopped, or the
            # interpreter would wait for it forever at exit
            with anyio.CancelScope(shield=True):
                await session.aclose()
