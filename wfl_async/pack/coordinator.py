"""The driver side of packing, one :class:`PackCoordinator` per system.

- **enqueue**: packed chunks hand their staged :class:`~wfl_async.system.SubmitRequest` here
  instead of to the submit loop; requests arriving together go out as ONE command (a tar
  stream of their directories, then :func:`~.queue.enqueue_command`), at most
  :data:`~wfl_async.scheduler.base.MAX_BATCH` per command (the first batch while no chunk is
  queued: at most :data:`~wfl_async.system.batching.FIRST_BATCH`, so workers start early). Each chunk is then recorded as
  submitted, with a remote id naming its pack (:func:`~.queue.chunk_remote_id`).
- **poll**: the system's survey command carries :func:`~.queue.listing_command` (no extra
  round trip, :mod:`.listings`; its answer does not grow with the chunks queued): each queued
  chunk is reported ``queued``, each taken one ``running``, so the poll loop's usual rules
  (markers, grace, fetch) apply to packed chunks unchanged.
- **workers**: after each enqueue and each listing, while chunks remain and fewer than the
  target of workers are alive, more are submitted through the system's submit loop (ordinary
  jobs: batching, submit locks and site limits apply). A worker gone from the scheduler's
  listing for ``died_grace_seconds`` without having exited of its own accord is dead: its
  taken chunks are put back in the queue (one command, only when that happens). The
  decisions are pure functions (:mod:`.workers`); this module carries them out.

The coordinator is built by the session with what it needs (the system's
:class:`~wfl_async.system.machine.Machine`, queue window, recorder and submit loop, and the
:class:`~.listings.PackListings` the system's surveys fill) and started beside the system
with ``TaskGroup.start``: its loop queues chunks and acts on each fresh listing.

A rerun re-attaches chunk by chunk as today (their records say queued/submitted/finished);
:meth:`PackCoordinator.expect` tells the coordinator how to start workers for a pack whose
chunks it did not enqueue itself, so a rerun finds workers for them if none are left.
"""

from __future__ import annotations

import functools
import logging
import math
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ..errors import SchedulerError, TransportError
from ..jobs.pack_option import PackSetting
from ..jobs.states import ACTIVE_STATES, QueueState
from ..scheduler.base import Accounted, Scheduler
from ..system import SubmitRequest
from ..system.batching import gather_arrivals, resend_after
from ..system.machine import Machine
from ..system.paths import safe_name
from ..system.recorder import Recorder
from ..system.submit import retry_delay
from ..system.window import QueueWindow
from .kills import ACCOUNTING_LISTINGS, at_limit, chunk_ending, from_listing, split_taken
from .listings import Listed, PackListings
from .queue import (
    NAMES_PER_COMMAND,
    PackListing,
    chunk_remote_id,
    enqueue_command,
    moved_by,
    pack_id,
    prune_gone_command,
    requeue_command,
    worker_dir,
)
from .tuning import worker_walltime, workers_wanted
from .workers import WorkerState, is_alive, judge, workers_to_start

__all__ = ["WALLTIME_SLOT", "PackCoordinator", "PackSummary", "PackTuning", "WorkerSpec", "worker_command",
           "worker_remote_id"]

log = logging.getLogger(__name__)

_BATCH_WINDOW, _MAX_BATCH_WAIT = 0.05, 1.0
"""As the submit loop: take requests while they keep arriving, 50 ms at a time, at most 1 s."""
WORKER_WAIT = 30.0
"""Longest wait (s) for a pack's workers to be submitted before its newly queued chunks are released."""
ENQUEUES_IN_FLIGHT = 2
"""Enqueue commands running at once. The chunks arriving meanwhile wait in the stream and go in fuller
batches, and the transport's channels stay free for the polls and fetches that bring results back
(issue 16: at 10^4 chunks, dozens of enqueue commands queued for the channels ahead of every fetch,
and results reached the caller many seconds after their polls had seen them)."""
MAX_ENQUEUE_ATTEMPTS = 10
"""Tries to queue a chunk whose enqueue command keeps failing before its call is told."""


WALLTIME_SLOT = "@wfl_async_walltime@"
"""Stands for the walltime in a self-tuned worker's command: each worker's is chosen as it is submitted."""


def worker_command(python: str, max_time: int | str, idle: float) -> str:
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

    @cached_property
    def pack_id(self) -> str:
        """Same script, same pack: chunks of calls with the same resources share workers (hashed once per script,
        whatever the specs: jobs named one by one each have a spec of their own)."""
        return _script_pack_id(self.partition, tuple(self.node_dict.items()), self.max_time, self.header_extra,
                               self.body)


@functools.lru_cache(maxsize=64)
def _script_pack_id(partition: str, node_items: tuple[tuple[str, int], ...], max_time: int,
                    header_extra: tuple[str, ...], body: tuple[str, ...]) -> str:
    return pack_id([partition, dict(node_items), max_time, header_extra, body])


@dataclass(frozen=True)
class PackTuning:
    """What a self-tuned call tells its pack's coordinator about the work left (:mod:`.tuning`)."""

    longest: float
    """Predicted seconds of the longest task not finished (0: none predicted yet)."""
    backlog: float
    """Predicted seconds of all work not finished, queued or not yet planned."""


@dataclass
class _Pack:
    spec: WorkerSpec | None = None
    workers: dict[str, WorkerState] = field(default_factory=dict)
    remaining: int = 0
    """Chunks queued or taken, as last listed, plus those enqueued since."""
    queued: int = 0
    """Chunks not taken by any worker, as last listed, plus those enqueued or put back since."""
    running: int = 0
    topping_up: bool = False
    requeueing: bool = False
    pruning: bool = False
    accounting_asked: dict[str, int] = field(default_factory=dict)
    """Worker -> times its accounting was asked and had no record of it yet."""
    ended: dict[str, Accounted] = field(default_factory=dict)
    """Worker gone from the queue -> how it ended (its listing or accounting)."""
    asking: bool = False
    warned: bool = False


@dataclass(frozen=True)
class PackSummary:
    """One pack's queue as last listed (for the command line)."""

    pack_id: str
    queued: int
    running: int
    workers_alive: int


def worker_remote_id(answer: str, scheduler: Scheduler, own_id: str | None = None,
                     states: Mapping[str, QueueState] | None = None) -> str | None:
    """A worker's queue id: from its submit answer (exit status, then the scheduler's output, one
    line), else (the answer lost) the id it found in its environment, as the scheduler lists it."""
    rc, _, output = answer.partition(" ")
    found = scheduler.parse_submitted_id(output) if rc else None
    if found or not own_id:
        return found
    return next((key for key in (states or {}) if key == own_id or own_id.startswith(f"{key}.")), own_id)


@dataclass(eq=False)
class _Enqueue:
    request: SubmitRequest
    pid: str


class PackCoordinator:
    """Packing on one system, built and served by the session; see the module docstring.

    :param machine: the system's machine (transport, run directory, counters)
    :param window: the system's queue window (workers of an earlier run take room in it)
    :param recorder: told of each chunk queued (recorded as submitted, as a queued job is)
    :param submit: the system's submit loop, through which worker jobs are submitted
    :param listings: the packs' queues as the system's surveys list them
    """

    def __init__(self, machine: Machine, window: QueueWindow, recorder: Recorder,
                 submit: Callable[[SubmitRequest], Awaitable[str]], listings: PackListings) -> None:
        self.machine = machine
        self.window = window
        self.recorder = recorder
        self._submit = submit
        self.listings = listings
        self._packs: dict[tuple[str, str], _Pack] = {}
        self._tuning: dict[str, PackTuning] = {}
        self._send, self._receive = anyio.create_memory_object_stream[_Enqueue](math.inf)
        self._tasks: anyio.abc.TaskGroup | None = None
        self.stopped_by: BaseException | None = None
        """Set by :meth:`stop_waiters`: packing on this system is gone, and every later chunk raises this."""
        self.stats = {"enqueue_commands": 0, "workers_submitted": 0, "requeue_commands": 0, "chunks_put_back": 0,
                      "gone_pruned": 0, "chunks_killed_at_limit": 0}

    @property
    def listed(self) -> dict[str, Listed]:
        """Remote root -> the last survey's listing of its packs and the scheduler's states."""
        return self.listings.listed

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
        scheduler = self.machine.scheduler
        return [PackSummary(pid, q.queued, len(q.taken), sum(
            1 for name, answer in q.workers.items()
            if states is None or states.get(worker_remote_id(answer, scheduler, q.own_ids.get(name), states) or "")
            in ACTIVE_STATES))
            for pid, q in sorted(listing.packs.items())]

    # ------------------------------------------------------------------ the loop
    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Queue chunks and act on the packs' listings until cancelled (the session starts it beside the system)."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            tasks.start_soon(self._enqueue_loop)
            task_status.started()
            try:
                while True:
                    for root, (listing, states) in (await self.listings.fresh()).items():
                        self._after_listing(root, listing, states)
            finally:
                self._tasks = None

    def _start(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        assert self._tasks is not None, "only the served coordinator starts tasks"
        self._tasks.start_soon(func, *args)

    # ------------------------------------------------------------------ enqueue
    def expect(self, spec: WorkerSpec, root: str) -> None:
        """Workers for ``spec``'s pack under ``root`` may be submitted (a rerun re-attaching)."""
        pack = self._packs.setdefault((root, spec.pack_id), _Pack())
        if pack.spec is None or spec.setting.workers > pack.spec.setting.workers:
            pack.spec = spec

    def tune(self, pid: str, tuning: PackTuning) -> None:
        """A self-tuned call's latest view of pack ``pid``'s work: its next workers' count and walltime."""
        self._tuning[pid] = tuning

    def _worker_plan(self, spec: WorkerSpec, pid: str) -> tuple[int, int]:
        """How many workers pack ``pid`` should have alive, and the walltime (s) of the next one."""
        setting = spec.setting
        hint = self._tuning.get(pid)
        if not setting.tuned or hint is None:
            return setting.workers, spec.max_time
        wanted = workers_wanted(max_workers=setting.workers, backlog=hint.backlog)
        return wanted, worker_walltime(longest=hint.longest, backlog=hint.backlog, workers=wanted, cap=spec.max_time)

    async def submit(self, request: SubmitRequest, spec: WorkerSpec) -> str:
        """Stage ``request``'s chunk and put it in its pack's queue; return its remote id.

        :raises RuntimeError: the coordinator is not served (use it through a session)
        """
        if self.stopped_by is not None:
            raise self.stopped_by
        if self._tasks is None:
            raise RuntimeError(f"packing on {self.machine.name!r} is not being served: use it through a session "
                               f"(wfl_async.session.session_scope)")
        root = await self.machine.remote_root()
        self.expect(spec, root)
        self._send.send_nowait(_Enqueue(request, spec.pack_id))
        return await request.settled()

    def stop_waiters(self, error: BaseException) -> None:
        """Its loop stopped for good: settle every chunk still waiting to be queued with ``error``."""
        self.stopped_by = error
        while True:
            try:
                item = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            if not item.request.done.is_set():
                item.request.fail(error)

    async def _enqueue_loop(self) -> None:
        slots = anyio.Semaphore(ENQUEUES_IN_FLIGHT)
        async for first in self._receive:
            await slots.acquire()  # a batch takes what arrived while the earlier commands ran
            batch = [first]
            await gather_arrivals(batch, self._receive.receive_nowait, window=_BATCH_WINDOW, longest=_MAX_BATCH_WAIT,
                                  first=not any(p.remaining for p in self._packs.values()))
            by_pack: dict[str, list[_Enqueue]] = {}
            for item in batch:
                by_pack.setdefault(item.pid, []).append(item)
            self._start(self._enqueue_in_slot, by_pack, slots)

    async def _enqueue_in_slot(self, by_pack: Mapping[str, Sequence[_Enqueue]], slots: anyio.Semaphore) -> None:
        try:
            with anyio.CancelScope(shield=True):  # taken from the stream: settled even at close
                async with anyio.create_task_group() as tasks:
                    for pid, items in by_pack.items():  # one command per pack, side by side
                        tasks.start_soon(self._enqueue, pid, items)
        finally:
            slots.release()

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
        root: str | None = None
        try:
            root = await self.machine.remote_root()
            new, queued = await self._enqueue_command(root, pid, requests)
            complaint = "no answer for it"
        except TransportError as exc:
            new, queued, complaint = set(), set(), str(exc)
        except Exception as exc:  # a mistake (an unusable rundir, a vanished stage dir): retrying cannot help
            log.info("%s: cannot queue %d packed chunk(s): %s", self.machine.name, len(items), exc)
            for request in requests:
                request.fail(exc)
            return
        accepted = []
        for item in items:
            if root is not None and item.request.job_dir in queued:
                self._accepted(item.request, pid)
                accepted.append(item.request)
            else:
                self._retry(item, complaint)
        if root is not None:
            self.recorder.submitted(accepted, root)  # recorded as submitted, as a queued job is
            pack = self._packs[(root, pid)]
            pack.remaining += len(new)  # only these may need a worker
            pack.queued += len(new)
            self._start(self._release_after_workers, root, pid, accepted)

    async def _enqueue_command(self, root: str, pid: str, requests: Sequence[SubmitRequest]) -> tuple[set[str], set[str]]:
        """Stage ``requests``' directories and queue them in pack ``pid`` (one command): the chunks
        newly queued, and all those in the queue now (new or queued before)."""
        then = f'cd "$wfl_async_root" && {enqueue_command(pid, [r.job_dir for r in requests])}'
        self.stats["enqueue_commands"] += 1
        self.machine.stats["submit_commands"] += 1
        # safe to repeat after a dropped connection: files already there are kept, and a
        # chunk already queued, taken or finished is not queued again
        answer = await self.machine.transport.upload(
            requests[0].local_root, [path for r in requests for path in r.upload], root, then=then,
            fresh=[r.job_dir for r in requests if r.reset], kind="submit", retry=True,
            contents={path: data for r in requests for path, data in r.contents.items()})
        lines = answer.stdout.decode(errors="replace").splitlines()
        new = {line[2:].strip() for line in lines if line.startswith("N ")}
        return new, new | {line[2:].strip() for line in lines if line.startswith("E ")}

    def _retry(self, item: _Enqueue, complaint: str) -> None:
        request = item.request
        request.attempts += 1
        if request.attempts > MAX_ENQUEUE_ATTEMPTS:
            request.fail(SchedulerError(f"{self.machine.name}: could not put job {request.job_name!r} "
                                        f"({request.job_dir}) in its pack's queue after {request.attempts - 1} "
                                        f"tries: {complaint}"))
            return
        delay = retry_delay("transient", request.attempts)
        log.info("job %s (%s): could not put it in pack %s on %s (%s); retry %d in %.1f s", request.job_name,
                 request.job_dir, item.pid, self.machine.name, complaint, request.attempts, delay)
        self._start(resend_after, self._send, item, delay)

    def _accepted(self, request: SubmitRequest, pid: str) -> None:
        request.remote_id = chunk_remote_id(pid, request.job_dir)
        log.info("job %s (%s): queued in pack %s on %s", request.job_name, request.job_dir, pid, self.machine.name)

    # ------------------------------------------------------------------ acting on a listing
    def _after_listing(self, root: str, listing: PackListing, states: dict[str, QueueState] | None) -> None:
        """Do what a listing of ``root``'s packs calls for (:func:`~.workers.judge`): put chunks back, top up."""
        now = time.monotonic()
        grace = self.machine.config.died_grace_seconds
        scheduler = self.machine.scheduler
        for pid, queue in listing.packs.items():
            pack = self._packs.setdefault((root, pid), _Pack())
            pack.remaining, pack.queued, pack.running = queue.queued + len(queue.taken), queue.queued, len(queue.taken)
            decision = judge(pack.workers, queue, states, now=now, grace=grace, where=self.machine.name,
                             worker_id=lambda answer, own_id: worker_remote_id(answer, scheduler, own_id, states))
            for name in decision.found:
                self.window.queued(worker_dir(pid, name))
            pack.workers = decision.workers
            self.window.left(worker_dir(pid, name) for name in decision.gone)
            if queue.gone and not pack.pruning:
                pack.pruning = True
                self._start(self._prune_gone, root, pid, sorted(queue.gone))
            if decision.requeue and not pack.requeueing:
                pack.requeueing = True
                self._start(self._requeue, root, pid, list(decision.orphans), list(decision.dead), states)
            elif pack.remaining:
                self._start(self._top_up, root, pid)
            missing = [name for name, w in pack.workers.items() if w.missing_since not in (None, -math.inf)
                       and name not in pack.ended and pack.accounting_asked.get(name, 0) < ACCOUNTING_LISTINGS]
            if missing and states is not None and not pack.asking:
                pack.asking = True  # why it left the queue, within a poll: not after the grace
                self._start(self._account_missing, root, pid, missing)
        for (where, pid), pack in self._packs.items():
            if where == root and pid not in listing.packs:
                pack.remaining = pack.queued = pack.running = 0

    async def _requeue(self, root: str, pid: str, taken: list[tuple[str, str]], dead: list[str],
                       states: Mapping[str, QueueState] | None) -> None:
        pack = self._packs[(root, pid)]
        try:
            killed, unknown = await self._killed_at_limit(root, pid, pack, dead, states)
            if unknown:  # its accounting may come at the next listing (SGE's qacct lags): ask again then
                return
            put_back, dropped = split_taken(taken, killed)
            self.stats["requeue_commands"] += 1
            step = NAMES_PER_COMMAND // 4  # each entry is a few names long
            # counted from what the commands moved: a listing older than an earlier requeue names its entries again
            requeued = dropped_now = 0
            for start in range(0, max(len(put_back), len(dead), len(dropped)), step):
                command = requeue_command(pid, put_back[start:start + step], dead[start:start + step],
                                          dropped[start:start + step])
                answer = await self.machine.transport.run(f"cd {shlex.quote(root)} && {command}", kind="submit",
                                                          retry=True)
                into_retry, into_gone = moved_by(answer.stdout.decode())
                requeued, dropped_now = requeued + into_retry, dropped_now + into_gone
            log.info("%s: pack %s: worker(s) %s left the queue without finishing; %d chunk(s) put back",
                     self.machine.name, pid, ", ".join(dead) or "-", requeued)
            for job_dir, worker in dropped:
                ended = chunk_ending(killed[worker], pack.workers[worker].remote_id or worker)
                self.listings.ended[chunk_remote_id(pid, job_dir)] = ended
                log.info("%s: pack %s: chunk %s was %s; it leaves the pack to be escalated", self.machine.name, pid,
                         job_dir, ended.detail())
            self.stats["chunks_put_back"] += requeued
            self.stats["chunks_killed_at_limit"] += dropped_now
            pack.queued += requeued
            for name in dead:
                self._forget(pack, pid, name)
        except TransportError as exc:
            log.warning("%s: pack %s: could not put chunks back (%s); trying after the next poll",
                        self.machine.name, pid, exc)
        finally:
            pack.requeueing = False
        await self._top_up(root, pid)

    async def _prune_gone(self, root: str, pid: str, gone: list[str]) -> None:
        """Remove the ``gone`` entries of chunks recorded as ended (the survey lists every entry left there)."""
        pack = self._packs[(root, pid)]
        try:
            ended = sorted(await self.recorder.ended(gone))
            for start in range(0, len(ended), NAMES_PER_COMMAND):
                command = prune_gone_command(pid, ended[start:start + NAMES_PER_COMMAND])
                await self.machine.transport.run(f"cd {shlex.quote(root)} && {command}", kind="other", retry=True)
                self.stats["gone_pruned"] += len(ended[start:start + NAMES_PER_COMMAND])
        except TransportError as exc:
            log.info("%s: pack %s: could not prune its gone entries (%s); trying after the next poll",
                     self.machine.name, pid, exc)
        finally:
            pack.pruning = False
    async def _account_missing(self, root: str, pid: str, names: Sequence[str]) -> None:
        """Workers missing from the queue that the accounting says ended are dead now (not after the grace)."""
        pack = self._packs[(root, pid)]
        try:
            for name in await self._accounting_of(root, pid, pack, names):
                if (worker := pack.workers.get(name)) is not None:
                    pack.workers[name] = replace(worker, missing_since=-math.inf)
        except TransportError as exc:
            log.info("%s: pack %s: could not read the accounting of worker(s) %s (%s)", self.machine.name, pid,
                     ", ".join(names), exc)
        finally:
            pack.asking = False

    async def _accounting_of(self, root: str, pid: str, pack: _Pack, names: Sequence[str]) -> dict[str, Accounted]:
        """How workers ``names`` ended, by the scheduler's accounting (one command; kept in ``pack.ended``)."""
        ask = {w.remote_id: name for name in names if name not in pack.ended
               and (w := pack.workers.get(name)) is not None and w.remote_id is not None}
        if ask:
            dirs = {remote_id: f"{root}/{worker_dir(pid, name)}" for remote_id, name in ask.items()}
            for remote_id, record in (await self.machine.accounting(dirs)).items():
                if remote_id in ask and record.work_dir.rstrip("/") in ("", dirs[remote_id]):
                    pack.ended[ask[remote_id]] = record
            for name in ask.values():
                if name not in pack.ended:
                    pack.accounting_asked[name] = pack.accounting_asked.get(name, 0) + 1
        return {name: pack.ended[name] for name in names if name in pack.ended}

    async def _killed_at_limit(self, root: str, pid: str, pack: _Pack, dead: Sequence[str],
                               states: Mapping[str, QueueState] | None) -> tuple[dict[str, Accounted], bool]:
        """Dead workers killed at their time or memory limit (:mod:`.kills`), and whether one's end is
        not known yet and worth asking again at the next listing (at most :data:`ACCOUNTING_LISTINGS` times)."""
        scheduler = self.machine.scheduler
        for name in dead:
            worker = pack.workers.get(name)
            if worker is not None and worker.remote_id is not None and name not in pack.ended:
                shown = from_listing((states or {}).get(worker.remote_id), scheduler.name, worker.walltime)
                if shown is not None:
                    pack.ended[name] = shown
        ended = await self._accounting_of(root, pid, pack, dead)
        asking = [name for name in dead if name not in ended and (w := pack.workers.get(name)) is not None
                  and w.remote_id is not None]
        unknown = bool(asking) and scheduler.accounting_command(["0"]) is not None and any(
            pack.accounting_asked.get(name, 0) < ACCOUNTING_LISTINGS for name in asking)
        return {name: record for name, record in ended.items() if at_limit(record)}, unknown

    # ------------------------------------------------------------------ workers
    def _forget(self, pack: _Pack, pid: str, name: str) -> None:
        """A worker is gone: its room in the queue window (``max_queued_jobs``) is free again."""
        pack.workers.pop(name, None)
        pack.accounting_asked.pop(name, None)
        pack.ended.pop(name, None)
        self.window.left([worker_dir(pid, name)])

    def _alive_count(self, pack: _Pack) -> int:
        now, grace = time.monotonic(), self.machine.config.died_grace_seconds
        return sum(1 for w in pack.workers.values() if is_alive(w, now=now, grace=grace))

    async def _top_up(self, root: str, pid: str) -> None:
        """Submit workers while chunks remain and fewer than the target are alive."""
        pack = self._packs[(root, pid)]
        if pack.spec is None and pack.remaining and not pack.warned and not self._alive_count(pack):
            pack.warned = True  # chunks re-attached by a call that does not pack: it cannot start workers
            log.warning("%s: pack %s has %d chunk(s) waiting and no worker job alive; this run does not know how to "
                        "start its workers: rerun with the same pack setting (RemoteInfo pack=...) as the run "
                        "that queued them", self.machine.name, pid, pack.remaining)
        if pack.spec is None or pack.topping_up or pack.requeueing:
            return
        target, walltime = self._worker_plan(pack.spec, pid)
        missing = workers_to_start(target, self._alive_count(pack), pack.queued)
        if missing <= 0:
            return
        pack.topping_up = True
        try:
            async with anyio.create_task_group() as tasks:
                for _ in range(missing):
                    tasks.start_soon(self._submit_worker, pack, pid, walltime)
        finally:
            pack.topping_up = False

    async def _submit_worker(self, pack: _Pack, pid: str, walltime: int) -> None:
        spec = pack.spec
        assert spec is not None
        name = f"w{uuid.uuid4().hex[:12]}"
        job_dir = worker_dir(pid, name)
        await anyio.Path(spec.local_root / job_dir).mkdir(parents=True, exist_ok=True)
        pack.workers[name] = WorkerState(submitted_at=time.monotonic(), walltime=walltime)
        request = SubmitRequest(job_dir=job_dir, job_name=safe_name(f"{spec.job_name}_worker"),
                                partition=spec.partition, node_dict=dict(spec.node_dict), max_time=walltime,
                                header_extra=list(spec.header_extra),
                                body=[line.replace(WALLTIME_SLOT, str(walltime)) for line in spec.body], upload=[],
                                local_root=spec.local_root)
        try:
            remote_id = await self._submit(request)
        except Exception as exc:  # refused: the next poll tries again
            pack.workers.pop(name, None)  # (the submit loop gave its room in the window back)
            log.warning("%s: pack %s: could not submit a worker: %s", self.machine.name, pid, exc)
            return
        if name in pack.workers:
            pack.workers[name] = replace(pack.workers[name], remote_id=remote_id)
        self.stats["workers_submitted"] += 1
        log.info("%s: pack %s: worker %s submitted as %s (walltime %d s)", self.machine.name, pid, name, remote_id,
                 walltime)
