"""The per-event-loop runtime: configuration, jobs database, systems and their connections.

Every job coroutine on an event loop shares one runtime, hence one ssh connection per
host and one poller per system, whatever operations it belongs to. The runtime is
reference counted: ``async with runtime_scope() as rt`` opens it (or joins the open one),
and the last scope to leave closes connections and the database. The sync wrapper keeps
one scope open on its long-lived loop, so successive plain-script calls reuse connections.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from ._private import private_dir
from .config import ProjectConfig, SystemConfig, load_config
from .jobs.database import JobsDatabase, JobStatus, process_owner
from .scheduler import Scheduler, get_scheduler
from .system import System, Watch
from .system.paths import project_key
from .transport.base import Transport
from .transport.local import LocalTransport

__all__ = ["Runtime", "runtime_scope"]

DB_NAME = "wfl_async_jobs.db"


class Runtime:
    """Shared state of one event loop. Create through :func:`runtime_scope`."""

    def __init__(self, config: ProjectConfig) -> None:
        self.config = config
        self.owner = process_owner()
        self.db = JobsDatabase(config.local_stage_dir / DB_NAME)
        self.stage_root = config.local_stage_dir / "wfl_async_stage"
        self._systems: dict[str, System] = {}
        self._transports: dict[tuple[str | None, tuple[str, ...] | None], Transport] = {}
        self._users = 0
        self._open_lock = anyio.Lock()
        self._opened = False

    async def open(self) -> None:
        async with self._open_lock:
            if not self._opened:
                private_dir(self.stage_root)  # [io] staged tasks and fetched results: their owner's only
                await self.db.open()
                self._opened = True

    async def aclose(self) -> None:
        self._opened = False
        for transport in self._transports.values():
            await transport.aclose()
        await self.db.close()

    def system(self, name: str) -> System:
        """The :class:`System` called ``name``; raises ConfigurationError for an unknown name."""
        if name not in self._systems:
            config = self.config.system(name)
            system = System(config, self._transport(config), _scheduler_for(config),
                            project_key(self.config.local_stage_dir))
            system.on_progress = self._record_progress
            self._systems[name] = system
        return self._systems[name]

    @property
    def systems(self) -> dict[str, System]:
        return dict(self._systems)

    def _transport(self, config: SystemConfig) -> Transport:
        key = (config.host, tuple(config.ssh_config) if config.ssh_config else None)
        if key not in self._transports:
            if config.host is None:
                self._transports[key] = LocalTransport()
            else:
                from .transport.ssh import SshTransport  # asyncssh only when a host needs it

                retry: dict[str, Any] = {}
                if config.retry is not None:  # EXPYRE_RETRY: so many tries, so long between them
                    tries, wait = config.retry
                    retry = dict(connect_attempts=tries, retry_wait=wait, max_delay=max(wait, 2.0))
                self._transports[key] = SshTransport(config.host, ssh_config=config.ssh_config,
                                                     max_channels=config.max_channels,
                                                     host_key_checking=config.ssh_host_key_checking, **retry)
        return self._transports[key]

    async def _record_progress(self, watches: Sequence[Watch]) -> None:
        """One database transaction per poll for every job whose state moved."""
        updates: list[tuple[str, dict[str, object]]] = []
        for watch in watches:
            if watch.outcome is None:
                updates.append((watch.key, {"status": JobStatus.STARTED}))
            elif watch.outcome.marker == "succeeded":
                updates.append((watch.key, {"status": JobStatus.SUCCEEDED}))
            elif watch.outcome.marker == "failed":
                updates.append((watch.key, {"status": JobStatus.FAILED}))
            else:
                updates.append((watch.key, {"status": JobStatus.DIED, "message": watch.outcome.message}))
        await self.db.update_many(u for u in updates if u[0])


def _scheduler_for(config: SystemConfig) -> Scheduler:
    if config.scheduler == "local":
        return get_scheduler("local", slot_dir=None, max_jobs=config.partitions[next(iter(config.partitions))]
                             ["num_cores"])
    return get_scheduler(config.scheduler)


_runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def runtime_scope(cwd: Path | None = None) -> AsyncIterator[Runtime]:
    """Open the event loop's runtime, or join it if already open; close it when the last user leaves."""
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None:
        runtime = _runtimes[loop] = Runtime(load_config(cwd))
    runtime._users += 1
    try:
        await runtime.open()
        yield runtime
    finally:
        runtime._users -= 1
        if runtime._users == 0:
            _runtimes.pop(loop, None)
            # shielded: on Ctrl-C the database thread must still be stopped, or the interpreter
            # would wait for it forever at exit
            with anyio.CancelScope(shield=True):
                await runtime.aclose()
