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

import logging
import math
import os
import re
import shlex
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from ase.atoms import Atoms

from .._pickling import dumps_call
from ..configset import ConfigSet, OutputSpec
from ..errors import JobCancelledError, JobSplitError, first_failure
from ..job import Packed, PreparedJob, RemoteJob
from ..jobs.hashing import code_source
from ..jobs.pack_option import AUTO, effective_pack
from ..jobs.states import UNFINISHED, JobStatus
from ..pack import auto
from ..placement.call import PlacedCall, Plan, plan
from ..placement.choices import first_name
from ..progress import Progress
from ..report import build_report, summary_lines
from ..session import Session, session_scope
from .autoparainfo import AutoparaInfo
from .chunk import ChunkResult
from .pool import do_in_pool
from .remoteinfo import RemoteInfo
from .utils import items_inputs_generator, queued_job_chunk_size, set_autopara_per_item_info, split_rng

__all__ = ["iter_remote", "run_remote", "submit_remote"]

log = logging.getLogger(__name__)

_POOL_ARGS_NOT_HASHED = ["outputspec", "num_python_subprocesses", "num_inputs_per_python_subprocess"]


@dataclass
class _Chunk:
    index: int
    items: list[Any]
    item_indices: tuple[int, ...]
    locs: tuple[str | None, ...]
    job: PreparedJob
    rngs: list[Any]
    maker: _ChunkJobs
    split_keys: list[str] = field(default_factory=list)
    """Keys of the jobs it was split into after kills at its time limit (escalation), all levels."""

    def halves(self) -> tuple[_Chunk, _Chunk]:
        """Its two halves, each a job of its own (its job was killed at its time limit: escalation)."""
        cut = len(self.items) // 2
        parts = []
        for part in (slice(None, cut), slice(cut, None)):
            items, indices, rngs = self.items[part], self.item_indices[part], self.rngs[part]
            job = self.maker.prepared(self.index, items, indices, rngs, sys_name=self.job.system.name)
            parts.append(_Chunk(self.index, items, indices, self.locs[part], job, rngs, self.maker))
        return parts[0], parts[1]


@dataclass
class _ChunkJobs:
    """How the jobs of one call's chunks are made: once for the call, again for a chunk's halves."""

    session: Session
    op: Callable[..., Any]
    args: Sequence[Any]
    kwargs: dict[str, Any]
    inherited: Any
    as_configset: bool
    autopara_info: AutoparaInfo
    remote_info: RemoteInfo
    pack: Any = None

    def remote_job(self, index: int, items: list[Any], item_indices: Sequence[int], rngs: list[Any]) -> RemoteJob:
        chunk_kwargs = dict(self.kwargs)
        set_autopara_per_item_info(chunk_kwargs, self.op, self.inherited, rngs, list(item_indices))
        autopara_info, remote_info = self.autopara_info, self.remote_info
        pool_kwargs = {"num_python_subprocesses": autopara_info.num_python_subprocesses,
                       "num_inputs_per_python_subprocess": autopara_info.num_inputs_per_python_subprocess,
                       "iterable": ConfigSet(items) if self.as_configset else items, "outputspec": OutputSpec(),
                       "op": self.op, "iterable_arg": autopara_info.iterable_arg,
                       "skip_failed": autopara_info.skip_failed, "initializer": autopara_info.initializer,
                       "args": list(self.args), "kwargs": chunk_kwargs}
        return job_from_remote_info(remote_info, do_in_pool, (), pool_kwargs,
                                    job_name=f"{remote_info.job_name}_chunk_{index}",
                                    extra_hash_ignore=_POOL_ARGS_NOT_HASHED,
                                    # the job's function is do_in_pool: version the operation's code
                                    code_version=code_source(self.op) if remote_info.code_version is True
                                    else remote_info.code_version)

    def prepared(self, index: int, items: list[Any], item_indices: Sequence[int], rngs: list[Any],
                 job: RemoteJob | None = None, sys_name: str | None = None) -> PreparedJob:
        job = job or self.remote_job(index, items, item_indices, rngs)
        if sys_name is not None:
            job.sys_name = sys_name
        prepared = _with_pack(job, self.pack).prepare(self.session)
        prepared.items = len(items)
        return prepared


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
        chunks = _prepare_chunks(session, op, inputs, args, kwargs, autopara_info, remote_info,
                                 placed.spread if placed is not None else None)
        try:
            async with anyio.create_task_group() as tg:
                for chunk in chunks:
                    tg.start_soon(_submit_chunk, chunk)
        except BaseExceptionGroup as group:  # e.g. the system's check failed: its one message, not a group
            raise first_failure(group) from None


async def _submit_chunk(chunk: _Chunk) -> None:
    """Submit ``chunk``'s job, or its halves' if an earlier run split it (escalation)."""
    try:
        await chunk.job.submit()
    except JobSplitError:
        for half in chunk.halves():
            await _submit_chunk(half)


async def iter_remote(*, op: Callable[..., Any], inputs: Any, outputs: OutputSpec | None, args: Sequence[Any],
                      kwargs: dict[str, Any], autopara_info: AutoparaInfo,
                      remote_info: RemoteInfo) -> AsyncIterator[ChunkResult]:
    """Yield each chunk's results as its job finishes (storing them in ``outputs`` first)."""
    async with session_scope() as session:
        placed = await _plan(session, remote_info)
        chunks = _prepare_chunks(session, op, inputs, args, kwargs, autopara_info, remote_info,
                                 placed.spread if placed is not None else None)
        job_dirs = frozenset(c.job.job_dir for c in chunks)
        call = placed.runner([c.job for c in chunks]) if placed is not None else None
        if placed is not None and call is not None:
            progress = _multi_progress(session, remote_info, chunks, placed, call, job_dirs)
        else:
            system = session.system(job_system(remote_info))
            packed = bool(chunks) and isinstance(chunks[0].job.route, Packed)
            workers = session.packing(system.name).workers_alive if packed else None
            progress = Progress.for_call(remote_info.job_name, system, total_chunks=len(chunks),
                                         total_items=sum(len(c.items) for c in chunks),
                                         running=lambda: system.started_count(job_dirs),
                                         waiting=lambda: system.waiting_count(job_dirs), workers=workers,
                                         arrays=lambda: system.array_count(job_dirs))
        run = call.result if call is not None else _job_result
        send, receive = anyio.create_memory_object_stream[tuple[_Chunk, Any, BaseException | None]](math.inf)
        failure: BaseException | None = None
        failed_keys: set[str] = set()
        with progress:
            async with anyio.create_task_group() as tg, receive:
                if call is not None:
                    tg.start_soon(call.watch)
                for chunk in chunks:
                    tg.start_soon(_run_chunk, chunk, send.clone(), run)
                send.close()
                async for chunk, value, error in receive:
                    progress.chunk_done(len(chunk.items), failed=error is not None)
                    if error is not None:
                        failed_keys.add(chunk.job.key)
                    if error is not None and not remote_info.ignore_failed_jobs:
                        # re-raised below, outside the task group, with its own type (not an
                        # ExceptionGroup); the other jobs stay queued and a rerun re-attaches
                        failure = error
                        tg.cancel_scope.cancel()
                        break
                    result = _chunk_result(chunk, value, error, remote_info)
                    if outputs is not None:
                        await anyio.to_thread.run_sync(_store, outputs, result)
                    yield result
                tg.cancel_scope.cancel()  # every chunk is in: the placement watch (if any) ends
            if failure is not None:
                if isinstance(failure, JobCancelledError):
                    await _say_what_is_left(session, chunks, failure)
                raise failure
            if outputs is not None:
                await anyio.to_thread.run_sync(outputs.close)
        if "WFL_EXPYRE_NO_MARK_PROCESSED" not in os.environ:
            # a failed chunk (ignore_failed_jobs) stays failed, for 'wfl-async report'; a rerun creates
            # it afresh either way
            await session.db.update_many((key, {"status": JobStatus.PROCESSED}) for c in chunks
                                         if c.job.key not in failed_keys for key in (c.job.key, *c.split_keys))
        if call is not None:
            log.info("%s: %s", remote_info.job_name, call.line())
        await _log_summary(session, remote_info.job_name, chunks)


def _multi_progress(session: Session, remote_info: RemoteInfo, chunks: Sequence[_Chunk], placed: Plan,
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


async def _log_summary(session: Session, name: str, chunks: Sequence[_Chunk]) -> None:
    """A few lines at the end of the call: its jobs, where they ran, wall and core time, failures."""
    if not chunks:
        return
    records = [r for c in chunks if (r := await session.db.get(c.job.key)) is not None]
    for line in summary_lines(build_report(records, {session.owner: session.costs()}, time.time()), name):
        log.info("%s", line)


async def _say_what_is_left(session: Session, chunks: Sequence[_Chunk], failure: JobCancelledError) -> None:
    """A job of the call was cancelled by the user: the call stops, and its other jobs are left as
    the user left them (queued or running ones go on; a rerun re-attaches). Say which, and how to
    cancel them too."""
    statuses = {c.job.key: r.status for c in chunks if (r := await session.db.get(c.job.key)) is not None}
    live = [c for c in chunks if statuses.get(c.job.key) in UNFINISHED]
    cancelled = sum(1 for s in statuses.values() if s is JobStatus.CANCELLED)
    name = re.sub(r"_chunk_\d+$", "", chunks[0].job.spec.job_name)
    if live:
        note = (f"{cancelled} of the call's {len(chunks)} jobs were cancelled; its other {len(live)} unfinished "
                f"job(s) were left queued or running (a rerun of the workflow re-attaches to them; "
                f"'wfl-async cancel -n {shlex.quote(name + '_chunk_.*')}' cancels them too)")
    else:
        note = f"{cancelled} of the call's {len(chunks)} jobs were cancelled; none of its jobs is still queued"
    log.warning("call %r stopped: %s", name, note)
    failure.add_note(note)


async def _run_chunk(chunk: _Chunk, send: Any, run: Callable[[PreparedJob], Awaitable[Any]]) -> None:
    async with send:
        try:
            value = await _chunk_value(chunk, chunk, run)
        except Exception as exc:
            await send.send((chunk, None, exc))
        else:
            await send.send((chunk, value, None))


async def _chunk_value(chunk: _Chunk, whole: _Chunk,
                       run: Callable[[PreparedJob], Awaitable[Any]] | None = None) -> list[Any]:
    """The per-item results of ``chunk``'s job; of its halves', in order, when it was split after a
    kill at its time limit (escalation, recorded in the jobs database: a rerun splits it at once and
    re-attaches to the halves). ``whole`` is the call's chunk it is part of; ``run`` waits for its job
    (a call over several systems: its placement's, which may move it); halves stay where it ran."""
    try:
        return _groups(await (run or _job_result)(chunk.job))
    except JobSplitError:
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


def _chunk_result(chunk: _Chunk, value: Any, error: BaseException | None, remote_info: RemoteInfo) -> ChunkResult:
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


def _store(outputs: OutputSpec, result: ChunkResult) -> None:
    for group, loc in zip(result.results, result.input_locs, strict=True):
        if group is not None:
            outputs.store(group, loc)


def _prepare_chunks(session: Session, op: Callable[..., Any], inputs: Any, args: Sequence[Any],
                    kwargs: dict[str, Any], autopara_info: AutoparaInfo, remote_info: RemoteInfo,
                    place: Callable[[int], list[str]] | None = None) -> list[_Chunk]:
    """Split the inputs and prepare one job per chunk; raises before anything is submitted.

    :param place: the system of each of N chunks (several systems listed); default: the one listed
    """
    kwargs, rng = split_rng(kwargs) if "rng" in kwargs else (dict(kwargs), None)
    maker = _ChunkJobs(session, op, args, kwargs, kwargs.get("_autopara_per_item_info"), isinstance(inputs, ConfigSet),
                       autopara_info, remote_info)
    per_job = queued_job_chunk_size(remote_info.num_inputs_per_queued_job,
                                    autopara_info.num_inputs_per_python_subprocess)
    dumps_call(op, (op, list(args), kwargs))  # once per call: an unpicklable op is named as the local pool names it
    unprepared: list[tuple[int, list[Any], tuple[int, ...], tuple[str | None, ...], list[Any], RemoteJob]] = []
    for index, group in enumerate(items_inputs_generator(inputs, per_job, rng)):
        items, item_indices, locs, rngs = [], [], [], []
        for item, item_i, loc, item_rng in group:
            if isinstance(item, Atoms):
                item.info.pop("EXPYRE_REMOTE_JOB_FAILED", None)
                if not isinstance(inputs, ConfigSet) and item.info.pop("_ConfigSet_loc", None) is not None:
                    warnings.warn("Removed _ConfigSet_loc info field from Atoms because input is not a ConfigSet",
                                  stacklevel=3)
            items.append(item)
            item_indices.append(item_i)
            locs.append(loc)
            rngs.append(item_rng)
        job = maker.remote_job(index, items, item_indices, rngs)
        unprepared.append((index, items, tuple(item_indices), tuple(locs), rngs, job))
    systems = place(len(unprepared)) if place is not None else [job.sys_name for *_, job in unprepared]
    maker.pack = _call_pack(session, remote_info, len(unprepared), systems[0] if systems else job_system(remote_info))
    for (*_, job), name in zip(unprepared, systems, strict=True):
        job.sys_name = name
    return [_Chunk(index, items, item_indices, locs, maker.prepared(index, items, item_indices, rngs, job), rngs, maker)
            for index, items, item_indices, locs, rngs, job in unprepared]


def _call_pack(session: Session, remote_info: RemoteInfo, chunks: int, system: str) -> Any:
    """The call's packing setting for every chunk, ``"auto"`` decided once for the call (pack/auto.py,
    by its first chunk's ``system``); None: each chunk's own option (and its system's default) stands."""
    if effective_pack(remote_info.pack, session.system(system).config.pack) != AUTO:
        return None
    decided = auto.decide(session.stage_root, remote_info.job_name, chunks)
    log.info("%s: pack=\"auto\": %s", remote_info.job_name,
             f"packing {chunks} chunks into {decided.workers} workers" if decided is not None
             else f"one job per chunk for {chunks} chunks")
    return {"workers": decided.workers, "idle_seconds": decided.idle_seconds} if decided is not None else False


def _with_pack(job: RemoteJob, pack: Any) -> RemoteJob:
    if pack is not None:
        job.options = job.options.replace(pack=pack)
    return job


def job_from_remote_info(info: RemoteInfo, function: Callable[..., Any], args: Sequence[Any],
                         kwargs: dict[str, Any], *, job_name: str | None = None,
                         extra_hash_ignore: Sequence[str] = (),
                         code_version: bool | str | None = None) -> RemoteJob:
    """The :class:`RemoteJob` running ``function(*args, **kwargs)`` with ``info``'s job options."""
    options = info.options.replace(
        resources=resources_dict(info.resources), hash_ignore=[*info.hash_ignore, *extra_hash_ignore],
        code_version=code_version if code_version is not None else info.code_version)
    return RemoteJob(function, args, kwargs, sys_name=job_system(info), job_name=job_name or info.job_name,
                     options=options)


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
