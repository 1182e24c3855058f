"""What to do after a job was killed at its time or memory limit: split it, or rerun it with more.

A job the scheduler killed at its time limit will be killed again if it is resubmitted as it was
(wfl's ``resubmit_killed_jobs``). :func:`next_step` decides, from why it ended
(:class:`~wfl_async.jobs.ended.EndCause`) and what was tried so far (:class:`Escalation`, kept in
the jobs database so a rerun goes on from there), the one next thing worth trying:

- killed at its time limit, holding more than one configuration: split it in two;
- killed at its time limit, one configuration: rerun it with twice the time, up to the partition's
  ``max_time`` (config.json);
- killed above its memory: rerun it with twice the memory it asked for (the node's ``max_mem`` when
  it asked for none), up to the partition's ``max_mem``;
- anything else, or at the limit already: nothing (the job's error then says what was tried).

Pure: no I/O. Part of the floor data layer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from .ended import EndCause, hms

__all__ = ["MAX_STEPS", "Escalation", "next_step"]

MAX_STEPS = 6
"""Escalation steps at most per job: each doubles, so six reach 64 times the first request."""


@dataclass(frozen=True)
class Escalation:
    """What was done so far after kills of one job, and what its next run asks for."""

    max_time: int | None = None
    """Time limit (s) of its next run; None: as its options say."""
    mem_kb: int | None = None
    """Memory (kB) of its next run; None: as its options say."""
    split: bool = False
    """It was split in two (a chunk of several configurations): its halves run instead of it."""
    tried: tuple[str, ...] = ()
    """Each step, in words (``time limit 00:01:00 -> 00:02:00 after Slurm TIMEOUT``)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Escalation:
        """The record's escalation (an empty one for a job never escalated, or one written by a newer version)."""
        if not text:
            return NO_ESCALATION
        try:
            values = json.loads(text)
            return cls(max_time=values.get("max_time"), mem_kb=values.get("mem_kb"), split=bool(values.get("split")),
                       tried=tuple(values.get("tried") or ()))
        except (ValueError, AttributeError, TypeError):
            return cls()

    def summary(self) -> str:
        """What was tried, for messages and ``wfl-async ls -l`` (empty: nothing)."""
        return "; ".join(self.tried)

    def short(self) -> str:
        """Where it stands, for a column of ``wfl-async ls``: ``split``, ``time 00:02:00``, ``mem 512 MB`` ("": nothing)."""
        return " ".join(part for part in ("split" if self.split else "",
                                          f"time {hms(self.max_time)}" if self.max_time else "",
                                          f"mem {_mem(self.mem_kb)}" if self.mem_kb else "") if part)


NO_ESCALATION = Escalation()
"""A job never escalated (shared: it is frozen, and 10^5 jobs may wait at once)."""


def _mem(kb: int) -> str:
    return f"{kb / 1024 ** 2:.3g} GB" if kb >= 1024 ** 2 else f"{-(-kb // 1024)} MB"


def next_step(done: Escalation, cause: EndCause | None, *, how: str, max_time: int, mem_kb: int | None,
              time_cap: int | None, mem_cap: int | None, items: int) -> Escalation | None:
    """The escalation to apply after a kill, or None when there is nothing left worth trying.

    :param done: what was tried before
    :param cause: why it ended (None: the accounting did not say)
    :param how: the scheduler's words for the end (``Slurm TIMEOUT``), for :attr:`Escalation.tried`
    :param max_time: the time limit (s) it ran with
    :param mem_kb: the memory (kB) it asked for (None: none, the scheduler's default)
    :param time_cap: the partition's time limit (s; None: none set)
    :param mem_cap: the partition's memory for its nodes (kB; None: none set)
    :param items: configurations it holds (a chunk of more than one can be split)
    """
    if len(done.tried) >= MAX_STEPS:
        return None
    if cause is EndCause.TIMEOUT:
        if items > 1:
            return replace(done, split=True, tried=(*done.tried, f"split in two ({items} configurations) after {how}"))
        more = 2 * max_time if time_cap is None else min(2 * max_time, time_cap)
        if more <= max_time:
            return None
        return replace(done, max_time=more, tried=(*done.tried, f"time limit {hms(max_time)} -> {hms(more)} after {how}"))
    if cause is EndCause.OUT_OF_MEMORY:
        memory = mem_cap if mem_kb is None else (2 * mem_kb if mem_cap is None else min(2 * mem_kb, mem_cap))
        if memory is None or (mem_kb is not None and memory <= mem_kb):
            return None
        was = _mem(mem_kb) if mem_kb is not None else "the scheduler's default"
        return replace(done, mem_kb=memory, tried=(*done.tried, f"memory {was} -> {_mem(memory)} after {how}"))
    return None
