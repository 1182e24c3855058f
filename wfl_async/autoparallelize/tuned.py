"""A self-tuned call (``pack="auto"`` or a dict of tuning keys): chunks planned as results come back.

The call does not split its inputs up front. It keeps a few tasks per worker queued
(:data:`~wfl_async.pack.tuning.FIRST_TASKS_PER_WORKER`), each sized from the operation's
measured times on the system (the jobs database keeps every chunk's ``(seconds, configurations)``
per operation and system, :meth:`~wfl_async.jobs.database.JobsDatabase.measured_times`): one
configuration each while little is measured, then about ``target_chunk_seconds`` each, smaller
near the end. Each task carries its predicted time (a worker takes it only if it fits the time it
has left), and the pack's coordinator is told the longest task and the backlog left, from which
it chooses how many workers to run and each one's walltime (:mod:`wfl_async.pack.tuning`).

Restarts: the grouping is recorded in the jobs database (``groups``: first index and count per
chunk, under an id of the call's inputs) *before* the chunk is claimed. A rerun with the same
inputs replays the recorded groups first, so every chunk has the job key it had (re-attached or
its result found, never recomputed), and plans only the configurations no chunk held.
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..job import Packed
from ..jobs.pack_option import PackSetting
from ..pack.coordinator import PackTuning
from ..pack.tuning import (
    FIRST_TASKS_PER_WORKER,
    MIN_SAMPLES,
    TASKS_PER_WORKER,
    Estimate,
    chunk_size,
    estimate,
    longest_fitting,
)
from ..placement.choices import first_name
from ..session import Session
from .utils import ItemInput

if TYPE_CHECKING:
    from .remote import Chunk, ChunkMaker

__all__ = ["TunedChunks", "call_id"]

log = logging.getLogger(__name__)


def call_id(job_name: str, sys_name: str, entries: Sequence[ItemInput]) -> str:
    """The id of a call's inputs, under which its grouping is recorded: the same inputs, the same id."""
    digest = hashlib.sha256(f"{job_name}\0{sys_name}\0{len(entries)}\0".encode())
    for item, *_ in entries:
        digest.update(hashlib.sha256(pickle.dumps(item, protocol=4)).digest())
    return digest.hexdigest()


class TunedChunks:
    """The chunks of one self-tuned call, planned a few at a time (see the module docstring)."""

    def __init__(self, session: Session, maker: ChunkMaker, setting: PackSetting, entries: Sequence[ItemInput],
                 call: str, recorded: Sequence[tuple[int, int]], measured: list[tuple[float, int]]) -> None:
        self.session, self.maker, self.setting = session, maker, setting
        self.entries, self.call = entries, call
        self.operation, self.system = maker.remote_info.job_name, first_name(maker.remote_info.sys_name)
        self._replay = list(recorded)
        self.measured = measured
        self.planned = 0
        """Configurations planned into chunks so far (a prefix of the inputs)."""
        self.unfinished: dict[int, tuple[int, float | None]] = {}
        """Chunk index -> (configurations, predicted seconds) of chunks planned and not finished."""
        self._next_index = 0
        self._earlier = sum(n for _, n in measured)
        """Configurations measured by earlier calls."""
        self._finished: dict[int, int] = {}
        """Chunk index -> configurations, of chunks finished after the prefix below."""
        self._prefix = (0, 0)
        """(chunks, configurations) of the longest run of chunks, in plan order, all finished: the
        configurations measured without the bias of slow ones still running."""
        self.cap = 0.0
        """A worker's longest walltime (s): its call's ``max_time``, or the setting's ``walltime``."""
        self.pack_id: str | None = None

    @classmethod
    async def open(cls, session: Session, maker: ChunkMaker, setting: PackSetting) -> TunedChunks:
        """Read the call's earlier grouping and the operation's measured times; check every input."""
        entries = [group[0] for group in maker.groups(1)]
        info = maker.remote_info
        system = first_name(info.sys_name)  # a self-tuned call runs on one system (several: not tuned)
        call = call_id(info.job_name, system, entries)
        recorded = await session.db.groups(call)
        measured = await session.db.measured_times(info.job_name, system)
        tuned = cls(session, maker, setting, entries, call, recorded, measured)
        if entries:  # bad input fails here, before anything is submitted (every later chunk is built the same way)
            route = maker.chunk(0, entries[:1]).job.route
            if isinstance(route, Packed):
                tuned.cap, tuned.pack_id = float(route.worker.max_time), route.worker.pack_id
        log.info("%s: self-tuned (pack=%s): %d configurations; %d chunk(s) grouped by an earlier run; %d chunk "
                 "time(s) measured before", info.job_name, "auto", len(entries), len(recorded), len(measured))
        return tuned

    @property
    def total(self) -> int:
        return len(self.entries)

    def estimate(self) -> Estimate | None:
        return estimate(self.measured, unbiased=self._earlier + self._prefix[1])

    def exhausted(self) -> bool:
        """Every configuration is in a chunk."""
        return self.planned >= self.total

    async def more(self) -> list[Chunk]:
        """The next chunks to start: earlier runs' groups first, then new ones while the queue is short."""
        found = self.estimate()
        depth = (TASKS_PER_WORKER if found is not None and found.samples >= MIN_SAMPLES
                 else FIRST_TASKS_PER_WORKER) * self.setting.workers
        groups: list[tuple[int, int, float | None]] = []
        while self._replay and self._replay[0][0] == self.planned:
            first, count = self._replay.pop(0)
            groups.append((first, count, found.predict(count) if found else math.inf))
            self.planned += count
        self._replay = [g for g in self._replay if g[0] >= self.planned]
        new: list[tuple[int, int]] = []
        while not self.exhausted() and len(self.unfinished) + len(groups) < depth and (
                not self._replay or self._replay[0][0] > self.planned):
            remaining = self.total - self.planned
            if self._replay:
                remaining = min(remaining, self._replay[0][0] - self.planned)
            size = chunk_size(found, target_seconds=self.setting.target_chunk_seconds, remaining=remaining,
                              workers=self.setting.workers, walltime=self.cap)
            groups.append((self.planned, size, found.predict(size) if found else math.inf))
            new.append((self.planned, size))
            self.planned += size
        await self.session.db.record_groups(self.call, new)  # before any claim: a rerun groups the same
        chunks = []
        for first, count, predicted in groups:
            if predicted is not None and self.cap:  # the tail not known yet, or longer than any walltime
                predicted = min(predicted, longest_fitting(self.cap))
            if predicted is not None and not math.isfinite(predicted):
                predicted = None
            chunk = self.maker.chunk(self._next_index, self.entries[first:first + count], predicted)
            self._next_index += 1
            self.unfinished[chunk.index] = (count, predicted)
            chunks.append(chunk)
        self._tell_coordinator()
        return chunks

    async def finished(self, chunk: Chunk, seconds: float | None) -> None:
        """Chunk ``chunk`` is in (``seconds``: its measured run time, None: unknown or failed)."""
        self.unfinished.pop(chunk.index, None)
        if seconds is not None:
            self.measured.insert(0, (seconds, len(chunk.items)))
        self._finished[chunk.index] = len(chunk.items)
        index, configurations = self._prefix
        while index in self._finished:
            configurations += self._finished.pop(index)
            index += 1
        self._prefix = (index, configurations)
        self._tell_coordinator()

    def predicted_left(self, workers: int) -> float | None:
        """Seconds to the end of the call as predicted from the measured times, with ``workers`` running."""
        found = self.estimate()
        if found is None:
            return None
        return self._work_left(found) / max(1, workers)

    def _work_left(self, found: Estimate) -> float:
        """Seconds of work not finished at the measured mean (a task's prediction bounds its slowest
        configuration: it says when a task fits, not how long the rest takes)."""
        return (self.total - self.planned + sum(n for n, _ in self.unfinished.values())) * found.mean

    def _tell_coordinator(self) -> None:
        """The pack's coordinator chooses workers from the work left (nothing measured: its defaults)."""
        found = self.estimate()
        if found is None or self.pack_id is None:
            return
        predicted = [p if p is not None else n * found.mean for n, p in self.unfinished.values()]
        self.session.packing(self.system).tune(self.pack_id, PackTuning(longest=max(predicted, default=0.0),
                                                                        backlog=self._work_left(found)))
