"""Remote mode of autoparallelize: every chunk is a queued job, all in flight at once.

Chunks are prepared (validated, pickled, hashed) before anything is submitted, so bad input
fails with nothing queued. Then every chunk job runs as a coroutine in one task group; the
system layer batches their submissions and coalesces their polls. Each finished chunk's
configurations are stored in the :class:`OutputSpec` at once (its temporary file), and the
final file(s), in input order, are written when the last chunk is in.

The remote function of each job is :func:`wfl_async.autoparallelize.pool.do_in_pool` over the
chunk's items, exactly as in wfl, so a job parallelises over its node with
``WFL_NUM_PYTHON_SUBPROCESSES`` (default ``$EXPYRE_NUM_CORES_PER_NODE``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shlex
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from ase.atoms import Atoms

from .._gc import long_lived_frozen
from .._pickling import dumps_call, pickled_once
from ..configset import ConfigSet, OutputSpec
from ..errors import (
    ConfigurationError,
    DatabaseCorruptError,
    JobCancelledError,
    JobSplitError,
    LoopStoppedError,
    OutputInUseError,
    PermanentFailureError,
    first_failure,
)
from ..job import JobWaiter, Packed, PreparedJob, RemoteJob
from ..jobs.hashing import code_source
from ..jobs.options import JobOptions
from ..jobs.pack_option import effective_pack
from ..jobs.states import REATTACH, UNFINISHED, JobStatus
from ..pack.tuning import longest_fitting
from ..placement.call import PlacedCall, Plan, plan
from ..placement.choices import first_name
from ..progress import Progress
from ..report import build_report, summary_lines
from ..session import Session, session_scope
from .autoparainfo import AutoparaInfo
from .chunk import ChunkResult
from .pool import do_in_pool
from .remoteinfo import RemoteInfo
from .tuned import TunedChunks
from .utils import (
    ItemInput,
    items_inputs_generator,
    queued_job_chunk_size,
    set_autopara_per_item_info,
    split_rng,
    takes_per_item_info,
)

__all__ = ["iter_remote", "run_remote", "submit_remote"]

log = logging.getLogger(__name__)

_POOL_ARGS_NOT_HASHED = ["outputspec", "num_python_subprocesses", "num_inputs_per_python_subprocess"]


@dataclass
class Chunk:
    """One chunk of a call: its configurations, where they came from, and its prepared job."""

    index: int
    items: list[Any]
    item_indices: tuple[int, ...]
    locs: tuple[str | None, ...]
    job: PreparedJob
    group: tuple[ItemInput, ...] = ()
    """Its inputs as the call's maker took them (to make its halves)."""
    maker: ChunkMaker | None = None
    split_keys: list[str] = field(default_factory=list)
    """Keys of the jobs it was split into after kills at its time limit (escalation), all levels."""

    def halves(self) -> tuple[Chunk, Chunk]:
        """Its two halves, each a job of its own on the system it ran on (its job was killed at its
        time limit: escalation). A packed chunk's halves are staged to fit only a fresh worker: one
        taken with as little time left as the whole would be killed again."""
        assert self.maker is not None
        cut = len(self.group) // 2
        route = self.job.route
        predicted = longest_fitting(route.worker.max_time) if isinstance(route, Packed) else None
        first, second = (self.maker.chunk(self.index, part, predicted, sys_name=self.job.system.name)
                         for part in (self.group[:cut], self.group[cut:]))
        return first, second


async def run_remote(*, op: Callable[..., Any], inputs: Any, outputs: OutputSpec, args: Sequence[Any],
                     kwargs: dict[str, Any], autopara_info: AutoparaInfo, remote_info: RemoteInfo) -> ConfigSet:
    """Run ``op`` over ``inputs`` as queued jobs, store every result in ``outputs``, return them."""
    did_work = False
    async for _ in iter_remote(op=op, inputs=inputs, outputs=outputs, args=args, kwargs=kwargs,
                               autopara_info=autopara_info, remote_info=remote_info):
        did_work = True
    # an empty input: no job, no output file, an empty result (as the local pool gives)
    return outputs.to_ConfigSet() if did_work else ConfigSet(None)


async def submit_remote(*, op: Callable[..., Any], inputs: Any, args: Sequence[Any], kwargs: dict[str, Any],
                        autopara_info: AutoparaInfo, remote_info: RemoteInfo) -> None:
    """Submit every chunk's job and return (wfl's ``wait_for_results=False``); a later identical
    call re-attaches to the same jobs and collects their results."""
    async with session_scope() as session:
        placed = await _plan(session, remote_info)
        chunks = await _prepare_chunks(session, op, inputs, args, kwargs, autopara_info, remote_info,
                                       placed.spread if placed is not None else None)
        try:
            async with anyio.create_task_group() as tg:
                for chunk in chunks:
                    tg.start_soon(_submit_chunk, chunk)
        except BaseExceptionGroup as group:  # e.g. the system's check failed: its one message, not a group
            raise first_failure(group) from None


async def _submit_chunk(chunk: Chunk) -> None:
    """Submit ``chunk``'s job, or its halves' if an earlier run split it (escalation)."""
    try:
        await chunk.job.submit()
    except JobSplitError:
        for half in chunk.halves():
            await _submit_chunk(half)


async def iter_remote(*, op: Callable[..., Any], inputs: Any, outputs: OutputSpec | None, args: Sequence[Any],
                      kwargs: dict[str, Any], autopara_info: AutoparaInfo,
                      remote_info: RemoteInfo) -> AsyncIterator[ChunkResult]:
    """Yield each chunk's results as its job finishes (storing them in ``outputs`` first).

    A call over several systems (:mod:`wfl_async.placement`) is placed and may move chunks; a
    self-tuned call (``pack="auto"`` or a tuned dict, :mod:`.tuned`) on one system plans its chunks
    as results come back. A call over several systems is not self-tuned: its chunks are sized by
    ``num_inputs_per_queued_job`` and each system's own ``pack`` setting applies.
    """
    async with session_scope() as session:
        # what the caller held before the call (its inputs: 10^5 configurations) and, once the waiter
        # freezes them too, the prepared chunks are not walked by every full collection of the call
        # (wfl_async._gc): full collections took 0.049 ms per chunk of a 100,000-chunk rerun, 0.011 so
        with long_lived_frozen():
            placed = await _plan(session, remote_info)
            system = session.system(job_system(remote_info))
            setting = effective_pack(remote_info.pack, system.config.pack)
            tuned: TunedChunks | None = None
            if placed is None and setting is not None and setting.tuned:
                maker = ChunkMaker(session, op, inputs, args, kwargs, autopara_info, remote_info)
                tuned = await TunedChunks.open(session, maker, setting)
                chunks = await tuned.more()
            else:
                chunks = await _prepare_chunks(session, op, inputs, args, kwargs, autopara_info, remote_info,
                                               placed.spread if placed is not None else None)
            # what the call keeps of its chunks: a finished chunk leaves memory once its result is in the
            # caller, but for its job key (issue 16)
            job_dirs: set[str] = set()  # the chunks in flight, for the progress line
            keys: list[str] = []  # every chunk's job key, for the end of the call
            processed: list[str] = []  # the job keys (halves' too) of the chunks whose result is in
            call = placed.runner([c.job for c in chunks]) if placed is not None else None
            if placed is not None and call is not None:
                progress = _multi_progress(session, remote_info, chunks, placed, call,
                                           frozenset(c.job.job_dir for c in chunks))
            else:
                packed = bool(chunks) and isinstance(chunks[0].job.route, Packed)
                workers = session.packing(system.name).workers_alive if packed else None
                predicted = None if tuned is None else (lambda: tuned.predicted_left(
                    max(1, session.packing(system.name).workers_alive())))
                progress = Progress.for_call(remote_info.job_name, system, total_chunks=len(chunks),
                                             total_items=tuned.total if tuned else sum(len(c.items) for c in chunks),
                                             running=lambda: system.started_count(job_dirs),
                                             waiting=lambda: system.waiting_count(job_dirs), workers=workers,
                                             arrays=lambda: system.array_count(job_dirs), predicted_left=predicted)
            send, receive = anyio.create_memory_object_stream[_Arrived](math.inf)
            failure: BaseException | None = None
            in_flight = 0
            with progress:
                async with anyio.create_task_group() as tg, send, receive:

                    async def arrived(chunk: Chunk, value: Any, error: BaseException | None) -> None:
                        if isinstance(error, JobSplitError):  # killed at its time limit: its halves run instead
                            tg.start_soon(_run_chunk, chunk, send, _split_value)
                        else:
                            # a send, not send_nowait: once the call stops (an error), the stream is closed
                            # while the waiter's tasks wind down, and the send's checkpoint ends them as
                            # cancelled instead of raising ClosedResourceError beside the call's own error
                            await send.send((chunk, None if error is not None else _groups(value), error))

                    waiter = JobWaiter(arrived)

                    def start(chunk: Chunk) -> None:
                        """Run ``chunk``: a call on one system holds no task while its chunks wait (issue 16)."""
                        nonlocal in_flight
                        in_flight += 1
                        keys.append(chunk.job.key)
                        job_dirs.add(chunk.job.job_dir)
                        if call is not None:
                            tg.start_soon(_run_chunk, chunk, send, functools.partial(_placed_value, run=call.result))
                        else:
                            waiter.add(chunk.job, chunk)

                    if call is not None:
                        tg.start_soon(call.watch)
                    tg.start_soon(waiter.serve)
                    for chunk in chunks:
                        start(chunk)
                    del chunks  # each chunk is the waiter's (or its task's) until its result is in
                    feeding = tuned is not None and not tuned.exhausted()
                    while in_flight > 0:
                        # every chunk that came so far (a fetch wakes a batch of them): their times in one
                        # database read and one write
                        came = _up_to_failure([await receive.receive(), *_waiting(receive)], remote_info)
                        times = await _record_times(session, remote_info, [c for c, _, e in came if e is None])
                        ready: list[ChunkResult] = []
                        for chunk, value, error in came:
                            in_flight -= 1
                            job_dirs.discard(chunk.job.job_dir)
                            progress.chunk_done(len(chunk.items), failed=error is not None)
                            if error is None:
                                processed.extend((chunk.job.key, *chunk.split_keys))
                            if _stops_the_call(error, remote_info):
                                # re-raised below, outside the task group, with its own type (not an
                                # ExceptionGroup); the other jobs stay queued and a rerun re-attaches
                                failure = error
                                tg.cancel_scope.cancel()
                                break
                            if tuned is not None and feeding:
                                await tuned.finished(chunk, times.get(chunk.job.key))
                                for new in await tuned.more():
                                    progress.chunks_added(1)
                                    start(new)
                                feeding = not tuned.exhausted()
                            ready.append(_chunk_result(chunk, value, error, remote_info))
                        if outputs is not None and ready:  # one thread hop for every chunk that came
                            await anyio.to_thread.run_sync(_store, outputs, ready)
                        for result in ready:
                            yield result
                        if failure is not None:
                            break
                    tg.cancel_scope.cancel()  # every chunk is in: the waiter (and the placement watch, if any) end
                if failure is not None:
                    if isinstance(failure, JobCancelledError):
                        await _say_what_is_left(session, remote_info.job_name, keys, failure)
                    raise failure
                if outputs is not None:
                    await anyio.to_thread.run_sync(outputs.close)
            if "WFL_EXPYRE_NO_MARK_PROCESSED" not in os.environ:
                # a failed chunk (ignore_failed_jobs) stays failed, for 'wfl-async report'; a rerun creates
                # it afresh either way
                await session.db.update_many((key, {"status": JobStatus.PROCESSED}) for key in processed)
            if call is not None:
                log.info("%s: %s", remote_info.job_name, call.line())
            await _log_summary(session, remote_info.job_name, keys)


def _multi_progress(session: Session, remote_info: RemoteInfo, chunks: Sequence[Chunk], placed: Plan,
                    call: PlacedCall, job_dirs: frozenset[str]) -> Progress:
    systems = [session.system(n) for n in placed.names]
    return Progress.for_call(f"{'+'.join(placed.names)}: {remote_info.job_name}", None, total_chunks=len(chunks),
                             total_items=sum(len(c.items) for c in chunks),
                             running=lambda: sum(s.started_count(job_dirs) for s in systems),
                             waiting=lambda: sum(s.waiting_count(job_dirs) for s in systems),
                             detail=call.line)


async def _plan(session: Session, remote_info: RemoteInfo) -> Plan | None:
    return await plan(session, remote_info.sys_name, resources_dict(remote_info.resources), remote_info.options)


async def _job_result(job: PreparedJob) -> Any:
    return await job.result()


_Arrived = tuple[Chunk, Any, BaseException | None]
"""A chunk whose job ended, with its value or its error."""


def _waiting(receive: Any) -> list[_Arrived]:
    """The chunks already waiting in ``receive`` (without waiting for more)."""
    waiting = []
    while True:
        try:
            waiting.append(receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return waiting


def _up_to_failure(arrived: list[_Arrived], remote_info: RemoteInfo) -> list[_Arrived]:
    """``arrived`` up to the first chunk whose failure stops the call (:func:`_stops_the_call`): the
    chunks after it are left for a rerun, as if they had not come yet."""
    failed = next((i for i, (_, _, error) in enumerate(arrived) if _stops_the_call(error, remote_info)), None)
    return arrived if failed is None else arrived[:failed + 1]


def _stops_the_call(error: BaseException | None, remote_info: RemoteInfo) -> bool:
    """A chunk's failure stops the call unless ``ignore_failed_jobs`` — and even then when it is not
    the job's own failure (:data:`_NOT_JOB_FAILURES`: writing its inputs marked failed would hide it)."""
    return error is not None and (not remote_info.ignore_failed_jobs or isinstance(error, _NOT_JOB_FAILURES))


async def _record_times(session: Session, remote_info: RemoteInfo, chunks: Sequence[Chunk]) -> dict[str, float]:
    """Keep the finished chunks' measured run times (as each worker measured it, else from its started
    to its final marker) for later calls of the operation: one write for all of them, not waited for,
    and a database read only for the chunks whose worker stated no time. Returns each timed chunk's
    seconds by its job key."""
    unstated = [c.job.key for c in chunks if c.job.measured_seconds is None or c.job.ran_on is None]
    records = await session.db.get_many(unstated) if unstated else {}
    times: dict[str, float] = {}
    samples: dict[str, list[tuple[float, int]]] = {}
    for chunk in chunks:
        seconds, system = chunk.job.measured_seconds, chunk.job.ran_on
        if seconds is None or system is None:
            record = records.get(chunk.job.key)
            if record is None:
                continue
            system = record.system
            if seconds is None and record.started_at is not None and record.finished_at is not None:
                seconds = max(0.0, record.finished_at - record.started_at)
        if seconds is not None:
            times[chunk.job.key] = seconds
            samples.setdefault(system, []).append((seconds, len(chunk.items)))
    for system, system_samples in samples.items():
        session.db.record_times_soon(remote_info.job_name, system, system_samples)
    return times


async def _log_summary(session: Session, name: str, keys: Sequence[str]) -> None:
    """A few lines at the end of the call: its jobs, where they ran, wall and core time, failures (read
    and built only if they are logged: at 10^3 one-job chunks, 0.05 ms a job for lines nobody saw)."""
    if not keys or not log.isEnabledFor(logging.INFO):
        return
    found = await session.db.get_many(keys)
    records = [r for key in keys if (r := found.get(key)) is not None]
    for line in summary_lines(build_report(records, {session.owner: session.costs()}, time.time()), name):
        log.info("%s", line)


async def _say_what_is_left(session: Session, name: str, keys: Sequence[str], failure: JobCancelledError) -> None:
    """A job of the call was cancelled by the user: the call stops, and its other jobs are left as
    the user left them (queued or running ones go on; a rerun re-attaches). Say which, and how to
    cancel them too."""
    statuses = {key: r.status for key, r in (await session.db.get_many(keys)).items()}
    live = [key for key in keys if statuses.get(key) in UNFINISHED]
    cancelled = sum(1 for s in statuses.values() if s is JobStatus.CANCELLED)
    if live:
        note = (f"{cancelled} of the call's {len(keys)} jobs were cancelled; its other {len(live)} unfinished "
                f"job(s) were left queued or running (a rerun of the workflow re-attaches to them; "
                f"'wfl-async cancel -n {shlex.quote(name + '_chunk_.*')}' cancels them too)")
    else:
        note = f"{cancelled} of the call's {len(keys)} jobs were cancelled; none of its jobs is still queued"
    log.warning("call %r stopped: %s", name, note)
    failure.add_note(note)


_NOT_JOB_FAILURES = (ConfigurationError, PermanentFailureError, DatabaseCorruptError, LoopStoppedError, OutputInUseError)
"""Errors that stop a call even with ``ignore_failed_jobs``: they are not a job's failure but the user's
to fix (a system that cannot run jobs, a full disk, a damaged jobs database...). Written into the
output as failed configurations, they would leave it complete, and a rerun after the fix would do
nothing."""


async def _run_chunk(chunk: Chunk, send: Any, run: Callable[[Chunk], Awaitable[list[Any]]]) -> None:
    """``chunk``'s end, by ``run`` (:func:`_placed_value` or :func:`_split_value`), sent to the call."""
    try:
        value = await run(chunk)
    except Exception as exc:
        await send.send((chunk, None, exc))
    else:
        await send.send((chunk, value, None))


async def _chunk_value(chunk: Chunk, whole: Chunk,
                       run: Callable[[PreparedJob], Awaitable[Any]] | None = None) -> list[Any]:
    """The per-item results of ``chunk``'s job; of its halves', in order, when it was split after a
    kill at its time limit (escalation, recorded in the jobs database: a rerun splits it at once and
    re-attaches to the halves). ``whole`` is the call's chunk it is part of; ``run`` waits for its job
    (a call over several systems: its placement's, which may move it); halves stay where it ran."""
    try:
        return _groups(await (run or _job_result)(chunk.job))
    except JobSplitError:
        return await _halves_value(chunk, whole)


async def _placed_value(chunk: Chunk, run: Callable[[PreparedJob], Awaitable[Any]]) -> list[Any]:
    """The per-item results of a call's ``chunk`` over several systems: ``run`` is its placement's
    wait, which may move it."""
    return await _chunk_value(chunk, chunk, run)


async def _split_value(chunk: Chunk) -> list[Any]:
    """The per-item results of a call's ``chunk`` whose job was split: its halves', in order."""
    return await _halves_value(chunk, chunk)


async def _halves_value(chunk: Chunk, whole: Chunk) -> list[Any]:
    halves = chunk.halves()
    whole.split_keys.extend(half.job.key for half in halves)
    log.info("%s: chunk %d split into %d + %d configurations", chunk.job.spec.job_name, chunk.index,
             len(halves[0].items), len(halves[1].items))
    values: list[list[Any]] = [[], []]

    async def run_half(i: int) -> None:
        values[i] = await _chunk_value(halves[i], whole)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_half, 0)
            tg.start_soon(run_half, 1)
    except BaseExceptionGroup as group:  # one half's own error, not a group
        raise first_failure(group) from None
    return values[0] + values[1]


def _groups(value: Any) -> list[Any]:
    """A chunk job's value as one result group per item."""
    return list(value.groups()) if isinstance(value, ConfigSet) else list(value)


def _chunk_result(chunk: Chunk, value: Any, error: BaseException | None, remote_info: RemoteInfo) -> ChunkResult:
    """The chunk's per-item results, or (``ignore_failed_jobs``) its inputs marked as failed."""
    if error is None:
        return ChunkResult(chunk.index, chunk.item_indices, chunk.locs, tuple(_groups(value)))
    warnings.warn(f"remote job for chunk {chunk.index} of {remote_info.job_name!r} failed ({error!r}); "
                  f"writing its inputs marked EXPYRE_REMOTE_JOB_FAILED", stacklevel=2)
    if not chunk.items or not isinstance(chunk.items[0], Atoms):
        return ChunkResult(chunk.index, chunk.item_indices, chunk.locs, (None,) * len(chunk.items))
    marked = []
    for atoms in chunk.items:
        atoms = atoms.copy()
        atoms.info["EXPYRE_REMOTE_JOB_FAILED"] = True
        marked.append(atoms)
    return ChunkResult(chunk.index, chunk.item_indices, chunk.locs, tuple(marked))


def _store(outputs: OutputSpec, results: Sequence[ChunkResult]) -> None:
    outputs.store_many(pair for result in results for pair in zip(result.results, result.input_locs, strict=True))


class ChunkMaker:
    """Builds the prepared job of one chunk of a call from its group of inputs (checked once per call)."""

    def __init__(self, session: Session, op: Callable[..., Any], inputs: Any, args: Sequence[Any],
                 kwargs: dict[str, Any], autopara_info: AutoparaInfo, remote_info: RemoteInfo,
                 pack: Any = None) -> None:
        self.session, self.op, self.inputs, self.args = session, op, inputs, args
        self.rng: Any
        self.kwargs, self.rng = split_rng(kwargs) if "rng" in kwargs else (dict(kwargs), None)
        self.inherited = self.kwargs.get("_autopara_per_item_info")
        self.autopara_info, self.remote_info = autopara_info, remote_info
        # one options object for every chunk of the call (the job's function is do_in_pool: the
        # operation's code is versioned)
        options = job_options(remote_info, extra_hash_ignore=_POOL_ARGS_NOT_HASHED,
                              code_version=code_source(op) if remote_info.code_version is True else None)
        self.options = options.replace(pack=pack) if pack is not None else options
        dumps_call(op, (op, list(args), self.kwargs))  # once per call: an unpicklable op is named as the local pool names it
        self.op_pickled = pickled_once(op, [op])
        """The operation pickled once for every chunk's task (by value it is its code each time)."""
        self.takes_per_item_info = takes_per_item_info(op)
        self.sys_name = job_system(remote_info)
        self.outputspec = OutputSpec()
        """The in-memory output spec every chunk's task carries, one per call like the system's name: here it
        is only pickled (each job stores into its own copy)."""

    def groups(self, per_job: int) -> Iterator[tuple[ItemInput, ...]]:
        """The inputs, ``per_job`` at a time (1: one configuration each, for a self-tuned call to group)."""
        return items_inputs_generator(self.inputs, per_job, self.rng)

    def job(self, index: int, group: Sequence[ItemInput]) -> RemoteJob:
        """The job of chunk ``index`` (its pack setting not applied yet)."""
        items, item_indices, locs, rngs = [], [], [], []
        for item, item_i, loc, item_rng in group:
            if isinstance(item, Atoms):
                item.info.pop("EXPYRE_REMOTE_JOB_FAILED", None)
                if not isinstance(self.inputs, ConfigSet) and item.info.pop("_ConfigSet_loc", None) is not None:
                    warnings.warn("Removed _ConfigSet_loc info field from Atoms because input is not a ConfigSet",
                                  stacklevel=4)
            items.append(item)
            item_indices.append(item_i)
            locs.append(loc)
            rngs.append(item_rng)
        chunk_kwargs = dict(self.kwargs)
        set_autopara_per_item_info(chunk_kwargs, self.op, self.inherited, rngs, item_indices,
                                   self.takes_per_item_info)
        info = self.autopara_info
        job_iterable = ConfigSet(items) if isinstance(self.inputs, ConfigSet) else items
        pool_kwargs = {"num_python_subprocesses": info.num_python_subprocesses,
                       "num_inputs_per_python_subprocess": info.num_inputs_per_python_subprocess,
                       "iterable": job_iterable, "outputspec": self.outputspec, "op": self.op,
                       "iterable_arg": info.iterable_arg, "skip_failed": info.skip_failed,
                       "initializer": info.initializer, "args": list(self.args), "kwargs": chunk_kwargs}
        job = RemoteJob(do_in_pool, (), pool_kwargs, sys_name=self.sys_name,
                        job_name=f"{self.remote_info.job_name}_chunk_{index}", options=self.options)
        job.pickled_once = self.op_pickled
        return job

    def chunk(self, index: int, group: Sequence[ItemInput], predicted_seconds: float | None = None,
              sys_name: str | None = None, *, pickle_now: bool = True) -> Chunk:
        """Chunk ``index`` prepared (checked, pickled, hashed), with the call's pack setting, on
        ``sys_name`` (default: the first system listed); ``pickle_now=False``: its task pickled later
        (:func:`_prepare_chunks`)."""
        job = self.job(index, group)
        if sys_name is not None:
            job.sys_name = sys_name
        prepared = job.prepare(self.session, pickle_now=pickle_now)
        prepared.predicted_seconds = predicted_seconds
        prepared.items = len(group)
        return Chunk(index, [g[0] for g in group], tuple(g[1] for g in group), tuple(g[2] for g in group), prepared,
                     tuple(group), self)


async def _prepare_chunks(session: Session, op: Callable[..., Any], inputs: Any, args: Sequence[Any],
                          kwargs: dict[str, Any], autopara_info: AutoparaInfo, remote_info: RemoteInfo,
                          place: Callable[[int], list[str]] | None = None) -> list[Chunk]:
    """Split the inputs and prepare one job per chunk; raises before anything is submitted.

    The task of a chunk an earlier run recorded (queued, running, finished) is not pickled: a rerun
    re-attaches to it (a rerun of 10^5 chunks spent most of its time pickling tasks it never sent).
    Every other chunk's task is pickled here, before anything is submitted, so an unpicklable input
    still fails the call with nothing queued; a recorded chunk that must run again after all (it died
    and is resubmitted) pickles its task then, as its earlier run did.

    :param place: the system of each of N chunks (several systems listed); default: the one listed
    """
    maker = ChunkMaker(session, op, inputs, args, kwargs, autopara_info, remote_info)
    per_job = queued_job_chunk_size(remote_info.num_inputs_per_queued_job,
                                    autopara_info.num_inputs_per_python_subprocess)
    groups = list(maker.groups(per_job))
    systems = place(len(groups)) if place is not None else [job_system(remote_info)] * len(groups)
    chunks = [maker.chunk(index, group, sys_name=name, pickle_now=False)
              for index, (group, name) in enumerate(zip(groups, systems, strict=True))]
    recorded = await session.db.statuses([c.job.job_dir for c in chunks])
    for chunk in chunks:
        if recorded.get(chunk.job.job_dir) not in REATTACH:
            chunk.job.pickle_task()
    return chunks


def job_from_remote_info(info: RemoteInfo, function: Callable[..., Any], args: Sequence[Any],
                         kwargs: dict[str, Any], *, job_name: str | None = None) -> RemoteJob:
    """The :class:`RemoteJob` running ``function(*args, **kwargs)`` with ``info``'s job options."""
    return RemoteJob(function, args, kwargs, sys_name=job_system(info), job_name=job_name or info.job_name,
                     options=job_options(info))


def job_options(info: RemoteInfo, *, extra_hash_ignore: Sequence[str] = (),
                code_version: bool | str | None = None) -> JobOptions:
    """The :class:`JobOptions` of ``info``'s jobs (``code_version``, if given, in place of ``info``'s)."""
    return info.options.replace(
        resources=resources_dict(info.resources), hash_ignore=[*info.hash_ignore, *extra_hash_ignore],
        code_version=code_version if code_version is not None else info.code_version)


def job_system(info: RemoteInfo) -> str:
    """The system a single job of ``info`` goes to: the first listed (several: its preferred one)."""
    return first_name(info.sys_name)


def resources_dict(resources: Any) -> dict[str, Any]:
    """RemoteInfo.resources as ExPyRe ``Resources`` keyword arguments."""
    if isinstance(resources, dict):
        return dict(resources)
    if hasattr(resources, "max_time") and hasattr(resources, "n"):  # an expyre Resources object
        count, unit = resources.n
        values: dict[str, Any] = {"max_time": resources.max_time, f"num_{unit}": count}
        if resources.max_mem is not None:
            values["max_mem_tot" if resources.max_mem[1] == "tot" else "max_mem_per_core"] = resources.max_mem[0]
        if resources.partitions is not None:
            values["partitions"] = resources.partitions
        return values
    raise TypeError(f"RemoteInfo.resources must be a dict of Resources arguments, not {resources!r}")
