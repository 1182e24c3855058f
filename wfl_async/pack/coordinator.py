"""The driver side of packing, one :class:`PackCoordinator` per system.

- **enqueue**: packed chunks hand their staged :class:`~wfl_async.system.SubmitRequest` here
  instead of to the submit loop; requests arriving together go out as ONE command (a tar
  stream of their directories, then :func:`~.queue.enqueue_command`), at most
  :data:`~wfl_async.scheduler.base.MAX_BATCH` per command (the first batch while no chunk is
  queued: at most :data:`~wfl_async.system.batching.FIRST_BATCH`, so workers start early). Each chunk is then recorded as
  submitted, with a remote id naming its pack (:func:`~.queue.chunk_remote_id`).
- **poll**: the system's survey command carries :func:`~.queue.listing_command` (no extra
  round trip): each queued chunk is reported ``queued``, each taken one ``running``, so the
  poll loop's usual rules (markers, grace, fetch) apply to packed chunks unchanged.
- **workers**: after each enqueue and each poll, while chunks remain and fewer than the
  target of workers are alive, more are submitted through the system's submit loop (ordinary
  jobs: batching, submit locks and site limits apply). A worker gone from the scheduler's
  listing for ``died_grace_seconds`` without having exited of its own accord is dead: its
  taken chunks are put back in the queue (one command, only when that happens).

A rerun re-attaches chunk by chunk as today (their records say queued/submitted/finished);
:meth:`PackCoordinator.expect` tells the coordinator how to start workers for a pack whose
chunks it did not enqueue itself, so a rerun finds workers for them if none are left.
"""

from __future__ import annotations

import logging
import math
import shlex
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from ..errors import SchedulerError, TransportError
from ..jobs.pack_option import PackSetting
from ..jobs.states import ACTIVE_STATES, QueueState
from ..system import SubmitRequest
from ..system.batching import gather_arrivals
from ..system.paths import safe_name
from ..system.submit import retry_delay
from .queue import (
    LISTING_END,
    NAMES_PER_COMMAND,
    PackListing,
    chunk_remote_id,
    enqueue_command,
    listing_command,
    pack_id,
    parse_listing,
    requeue_command,
    worker_dir,
)

if TYPE_CHECKING:
    from pathlib import Path

    from ..system import System

__all__ = ["PackCoordinator", "PackSummary", "WorkerSpec", "coordinator_for", "worker_command", "worker_remote_id"]

log = logging.getLogger(__name__)

_BATCH_WINDOW, _MAX_BATCH_WAIT = 0.05, 1.0
"""As the submit loop: take requests while they keep arriving, 50 ms at a time, at most 1 s."""
WORKER_WAIT = 30.0
"""Longest wait (s) for a pack's workers to be submitted before its newly queued chunks are released."""
MAX_ENQUEUE_ATTEMPTS = 10
"""Tries to queue a chunk whose enqueue command keeps failing before its call is told."""
_UNSEEN_GRACE = 30.0
"""Seconds a worker this process submitted counts as alive before any listing showed it."""


def worker_command(python: str, max_time: int, idle: float) -> str:
    """The job script line running the worker (its directory is ``<queue>/workers/<worker>``)."""
    return f"{shlex.quote(python)} -m wfl_async.pack.worker ../.. --max-time {max_time} --idle {idle:g}"


@dataclass(frozen=True)
class WorkerSpec:
    """How to submit a worker job for one pack: the call's resources and job script body."""

    job_name: str
    partition: str
    node_dict: dict[str, int]
    max_time: int
    header_extra: tuple[str, ...]
    body: tuple[str, ...]
    setting: PackSetting
    local_root: Path

    @property
    def pack_id(self) -> str:
        """Same script, same pack: chunks of calls with the same resources share workers."""
        return pack_id([self.partition, self.node_dict, self.max_time, self.header_extra, self.body])


@dataclass
class _Worker:
    remote_id: str | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    seen: bool = False
    missing_since: float | None = None
    first_unknown: float | None = None
    """When a listing first showed it without any queue id (its submit answer lost)."""


@dataclass
class _Pack:
    spec: WorkerSpec | None = None
    workers: dict[str, _Worker] = field(default_factory=dict)
    remaining: int = 0
    """Chunks queued or taken, as last listed, plus those enqueued since."""
    queued: int = 0
    """Chunks not taken by any worker, as last listed, plus those enqueued or put back since."""
    running: int = 0
    topping_up: bool = False
    requeueing: bool = False
    warned: bool = False


@dataclass(frozen=True)
class PackSummary:
    """One pack's queue as last listed (for the command line)."""

    pack_id: str
    queued: int
    running: int
    workers_alive: int


def worker_remote_id(answer: str, system: System, own_id: str | None = None,
                     states: dict[str, QueueState] | None = None) -> str | None:
    """A worker's queue id: from its submit answer (exit status, then the scheduler's output, one
    line), else (the answer lost) the id it found in its environment, as the scheduler lists it."""
    rc, _, output = answer.partition(" ")
    found = system.scheduler.parse_submitted_id(output) if rc else None
    if found or not own_id:
        return found
    return next((key for key in (states or {}) if key == own_id or own_id.startswith(f"{key}.")), own_id)


@dataclass(eq=False)
class _Enqueue:
    request: SubmitRequest
    pid: str


class PackCoordinator:
    """Packing on one system; created by :func:`coordinator_for`, see the module docstring."""

    def __init__(self, system: System) -> None:
        self.system = system
        self._packs: dict[tuple[str, str], _Pack] = {}
        self._send, self._receive = anyio.create_memory_object_stream[_Enqueue](math.inf)
        self._batcher = False
        self.listed: dict[str, tuple[PackListing, dict[str, QueueState] | None]] = {}
        """Remote root -> the last survey's listing of its packs and the scheduler's states."""
        self.stats = {"enqueue_commands": 0, "workers_submitted": 0, "requeue_commands": 0, "chunks_put_back": 0}

    # ------------------------------------------------------------------ counts (progress, CLI)
    def workers_alive(self) -> int:
        """Worker jobs of this system alive (queued or running) as last seen."""
        return sum(self._alive_count(p) for p in self._packs.values())

    def counts(self) -> tuple[int, int, int]:
        """Packed chunks queued, running, and workers alive on this system, as last listed."""
        return (sum(p.queued for p in self._packs.values()), sum(p.running for p in self._packs.values()),
                self.workers_alive())

    def summary(self, root: str) -> list[PackSummary]:
        """Every pack under ``root`` as the last survey listed it (workers alive: listed by the scheduler)."""
        listing, states = self.listed.get(root, (PackListing(), None))
        return [PackSummary(pid, len(q.queued), len(q.taken), sum(
            1 for name, answer in q.workers.items()
            if states is None or states.get(worker_remote_id(answer, self.system, q.own_ids.get(name), states) or "")
            in ACTIVE_STATES))
            for pid, q in sorted(listing.packs.items())]

    # ------------------------------------------------------------------ enqueue
    def expect(self, spec: WorkerSpec, root: str) -> None:
        """Workers for ``spec``'s pack under ``root`` may be submitted (a rerun re-attaching)."""
        pack = self._packs.setdefault((root, spec.pack_id), _Pack())
        if pack.spec is None or spec.setting.workers > pack.spec.setting.workers:
            pack.spec = spec

    async def submit(self, request: SubmitRequest, spec: WorkerSpec) -> str:
        """Stage ``request``'s chunk and put it in its pack's queue; return its remote id."""
        root = await self.system.remote_root()
        self.expect(spec, root)
        if not self._batcher:
            self._batcher = True
            self.system.start_soon(self._enqueue_loop)
        self._send.send_nowait(_Enqueue(request, spec.pack_id))
        await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.remote_id is not None
        return request.remote_id

    async def _enqueue_loop(self) -> None:
        async for first in self._receive:
            batch = [first]
            await gather_arrivals(batch, self._receive.receive_nowait, window=_BATCH_WINDOW, longest=_MAX_BATCH_WAIT,
                                  first=not any(p.remaining for p in self._packs.values()))
            by_pack: dict[str, list[_Enqueue]] = {}
            for item in batch:
                by_pack.setdefault(item.pid, []).append(item)
            for pid, items in by_pack.items():
                # batches go out side by side (each on its own channel), as fast as they fill
                self.system.start_soon(self._enqueue_shielded, pid, items)

    async def _enqueue_shielded(self, pid: str, items: Sequence[_Enqueue]) -> None:
        with anyio.CancelScope(shield=True):  # taken from the stream: settled even at close
            await self._enqueue(pid, items)

    async def _release_after_workers(self, root: str, pid: str, requests: Sequence[SubmitRequest]) -> None:
        """Release queued chunks once their pack has workers (at most :data:`WORKER_WAIT` s later).

        A caller that only submits (wfl's ``wait_for_results=False``) ends its session when its
        chunks are released: the workers must be on their way by then, or nothing would run them.
        """
        try:
            with anyio.move_on_after(WORKER_WAIT):
                await self._top_up(root, pid)
        finally:
            for request in requests:
                request.done.set()

    async def _enqueue(self, pid: str, items: Sequence[_Enqueue]) -> None:
        items = [item for item in items if not item.request.done.is_set()]
        if not items:
            return
        requests = [item.request for item in items]
        queued: set[str] = set()
        new: set[str] = set()
        root: str | None = None
        try:
            root = await self.system.remote_root()
            then = f'cd "$wfl_async_root" && {enqueue_command(pid, [r.job_dir for r in requests])}'
            self.stats["enqueue_commands"] += 1
            self.system.stats["submit_commands"] += 1
            # safe to repeat after a dropped connection: files already there are kept, and a
            # chunk already queued, taken or finished is not queued again
            answer = await self.system.transport.upload(
                requests[0].local_root, [path for r in requests for path in r.upload], root, then=then,
                fresh=[r.job_dir for r in requests if r.reset], kind="submit", retry=True)
            lines = answer.stdout.decode(errors="replace").splitlines()
            new = {line[2:].strip() for line in lines if line.startswith("N ")}
            queued = new | {line[2:].strip() for line in lines if line.startswith("E ")}
            complaint = "no answer for it"
        except TransportError as exc:
            complaint = str(exc)
        except Exception as exc:  # a mistake (an unusable rundir, a vanished stage dir): retrying cannot help
            log.info("%s: cannot queue %d packed chunk(s): %s", self.system.name, len(items), exc)
            for request in requests:
                request.error = exc
                request.done.set()
            return
        accepted = []
        for item in items:
            if root is not None and item.request.job_dir in queued:
                self._accepted(item.request, pid, root)
                accepted.append(item.request)
            else:
                self._retry(item, complaint)
        if root is not None:
            pack = self._packs[(root, pid)]
            pack.remaining += len(new)  # only these may need a worker
            pack.queued += len(new)
            self.system.start_soon(self._release_after_workers, root, pid, accepted)

    def _retry(self, item: _Enqueue, complaint: str) -> None:
        request = item.request
        request.attempts += 1
        if request.attempts > MAX_ENQUEUE_ATTEMPTS:
            request.error = SchedulerError(f"{self.system.name}: could not put job {request.job_name!r} "
                                           f"({request.job_dir}) in its pack's queue after {request.attempts - 1} "
                                           f"tries: {complaint}")
            request.done.set()
            return
        delay = retry_delay("transient", request.attempts)
        log.info("job %s (%s): could not put it in pack %s on %s (%s); retry %d in %.1f s", request.job_name,
                 request.job_dir, item.pid, self.system.name, complaint, request.attempts, delay)
        self.system.start_soon(self._resend_after, item, delay)

    async def _resend_after(self, item: _Enqueue, delay: float) -> None:
        await anyio.sleep(delay)
        self._send.send_nowait(item)

    def _accepted(self, request: SubmitRequest, pid: str, root: str) -> None:
        request.remote_id = chunk_remote_id(pid, request.job_dir)
        log.info("job %s (%s): queued in pack %s on %s", request.job_name, request.job_dir, pid, self.system.name)
        if self.system.on_submitted is not None:
            self.system.on_submitted(request, root)  # recorded as submitted, as a queued job is

    # ------------------------------------------------------------------ the poll's extension
    end = LISTING_END
    """Ends the listing's part of the survey's output."""

    def survey_shell(self, root: str) -> str:
        """Added to the system's survey command (read only): every pack's queue under ``root``."""
        return listing_command(root)

    def survey_states(self, root: str, text: str,
                      states: dict[str, QueueState] | None) -> dict[str, QueueState] | None:
        """The scheduler's states plus each packed chunk's (queued/running); acts on the listing.

        ``text`` is the listing part of the survey's output (up to :data:`~.queue.LISTING_END`).
        """
        listing = parse_listing(text)
        self.listed[root] = (listing, states)
        if states is not None:
            states = dict(states)
            for pid, queue in listing.packs.items():
                for job_dir in queue.queued:
                    states[chunk_remote_id(pid, job_dir)] = QueueState.QUEUED
                for job_dir in queue.taken:
                    states[chunk_remote_id(pid, job_dir)] = QueueState.RUNNING
        if self.system.serving:  # the command line's surveys only read
            self._after_listing(root, listing, states)
        return states

    def _after_listing(self, root: str, listing: PackListing, states: dict[str, QueueState] | None) -> None:
        now = time.monotonic()
        grace = self.system.config.died_grace_seconds
        for pid, queue in listing.packs.items():
            pack = self._packs.setdefault((root, pid), _Pack())
            pack.remaining, pack.queued, pack.running = len(queue.queued) + len(queue.taken), \
                len(queue.queued), len(queue.taken)
            for name, answer in queue.workers.items():
                if name not in pack.workers:  # a worker of an earlier run: it is in the queue, so it counts
                    self.system.window.hold([worker_dir(pid, name)])
                worker = pack.workers.setdefault(name, _Worker(submitted_at=-math.inf))
                worker.seen = True
                worker.remote_id = worker.remote_id or worker_remote_id(answer, self.system, queue.own_ids.get(name),
                                                                        states)
                if worker.remote_id is None:  # submitted, its answer lost, not started: cannot be judged
                    worker.first_unknown = worker.first_unknown or now
                    continue
                active = states is None or states.get(worker.remote_id) in ACTIVE_STATES
                worker.missing_since = None if active else (worker.missing_since or now)
            patience = max(_UNSEEN_GRACE, grace)
            for name in [n for n, w in pack.workers.items() if n not in queue.workers
                         and (w.seen or now - w.submitted_at > patience)]:
                self._forget(pack, pid, name)  # exited of its own accord (or retired, or never seen)
            dead = {n for n, w in pack.workers.items() if w.missing_since is not None
                    and now - w.missing_since > grace}
            orphans = [(job_dir, w) for job_dir, w in queue.taken.items()
                       if w in dead or (w not in pack.workers and states is not None)]
            if (dead or orphans) and not pack.requeueing:
                pack.requeueing = True
                self.system.start_soon(self._requeue, root, pid, orphans, sorted(dead))
            elif pack.remaining:
                self.system.start_soon(self._top_up, root, pid)
        for (where, pid), pack in self._packs.items():
            if where == root and pid not in listing.packs:
                pack.remaining = pack.queued = pack.running = 0

    async def _requeue(self, root: str, pid: str, taken: list[tuple[str, str]], dead: list[str]) -> None:
        pack = self._packs[(root, pid)]
        try:
            log.info("%s: pack %s: worker(s) %s left the queue without finishing; putting %d chunk(s) back",
                     self.system.name, pid, ", ".join(dead) or "-", len(taken))
            self.stats["requeue_commands"] += 1
            step = NAMES_PER_COMMAND // 4  # each entry is a few names long
            for start in range(0, max(len(taken), len(dead)), step):
                command = requeue_command(pid, taken[start:start + step], dead[start:start + step])
                await self.system.transport.run(f"cd {shlex.quote(root)} && {command}", kind="submit", retry=True)
            self.stats["chunks_put_back"] += len(taken)
            pack.queued += len(taken)
            for name in dead:
                self._forget(pack, pid, name)
        except TransportError as exc:
            log.warning("%s: pack %s: could not put chunks back (%s); trying after the next poll",
                        self.system.name, pid, exc)
        finally:
            pack.requeueing = False
        await self._top_up(root, pid)

    # ------------------------------------------------------------------ workers
    def _alive(self, worker: _Worker) -> bool:
        patience = max(_UNSEEN_GRACE, self.system.config.died_grace_seconds)
        now = time.monotonic()
        if not worker.seen:
            return now - worker.submitted_at < patience
        if worker.remote_id is None:  # counted for a while, never called dead: its chunks are not put back
            return worker.first_unknown is None or now - worker.first_unknown < 4 * patience
        # missing from one listing is not gone: a listing taken while its sbatch was still running
        # does not have it yet (its id came back meanwhile); it is dead after the grace, as a job is
        return worker.missing_since is None or now - worker.missing_since <= self.system.config.died_grace_seconds

    def _forget(self, pack: _Pack, pid: str, name: str) -> None:
        """A worker is gone: its room in the queue window (``max_queued_jobs``) is free again."""
        pack.workers.pop(name, None)
        self.system.window.release([worker_dir(pid, name)])

    def _alive_count(self, pack: _Pack) -> int:
        return sum(1 for w in pack.workers.values() if self._alive(w))

    async def _top_up(self, root: str, pid: str) -> None:
        """Submit workers while chunks remain and fewer than the target are alive."""
        pack = self._packs[(root, pid)]
        if pack.spec is None and pack.remaining and not pack.warned and not self._alive_count(pack):
            pack.warned = True  # chunks re-attached by a call that does not pack: it cannot start workers
            log.warning("%s: pack %s has %d chunk(s) waiting and no worker job alive; this run does not know how to "
                        "start its workers: rerun with the same pack setting (RemoteInfo pack=...) as the run "
                        "that queued them", self.system.name, pid, pack.remaining)
        if pack.spec is None or pack.topping_up or pack.requeueing:
            return
        # a worker can only help with chunks nobody has taken: those being run have a worker alive
        # (or are put back, and so queued, when theirs dies)
        alive = self._alive_count(pack)
        missing = min(pack.spec.setting.workers, alive + pack.queued) - alive
        if missing <= 0:
            return
        pack.topping_up = True
        try:
            async with anyio.create_task_group() as tasks:
                for _ in range(missing):
                    tasks.start_soon(self._submit_worker, pack, pid)
        finally:
            pack.topping_up = False

    async def _submit_worker(self, pack: _Pack, pid: str) -> None:
        spec = pack.spec
        assert spec is not None
        name = f"w{uuid.uuid4().hex[:12]}"
        job_dir = worker_dir(pid, name)
        await anyio.Path(spec.local_root / job_dir).mkdir(parents=True, exist_ok=True)
        worker = pack.workers[name] = _Worker()
        request = SubmitRequest(job_dir=job_dir, job_name=safe_name(f"{spec.job_name}_worker"),
                                partition=spec.partition, node_dict=dict(spec.node_dict), max_time=spec.max_time,
                                header_extra=list(spec.header_extra), body=list(spec.body), upload=[],
                                local_root=spec.local_root)
        try:
            worker.remote_id = await self.system.submit(request)
        except Exception as exc:  # refused: the next poll tries again
            pack.workers.pop(name, None)  # (the submit loop gave its room in the window back)
            log.warning("%s: pack %s: could not submit a worker: %s", self.system.name, pid, exc)
            return
        self.stats["workers_submitted"] += 1
        log.info("%s: pack %s: worker %s submitted as %s", self.system.name, pid, name, worker.remote_id)


def coordinator_for(system: System) -> PackCoordinator:
    """The system's coordinator, created (and hooked into its survey) on first use."""
    existing = system.survey_extension
    if isinstance(existing, PackCoordinator):
        return existing
    coordinator = PackCoordinator(system)
    system.survey_extension = coordinator
    return coordinator
