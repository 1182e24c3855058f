"""The placement rule, pure: where a call's chunks go, and which waiting chunks move.

Two inputs per system: what was measured before (:class:`Measured`, from the jobs database:
recent queue wait submit -> start and throughput) and what this call sees now
(:class:`Seen`: its chunks waiting, started and done there). No I/O, no clock: the caller
passes ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .choices import Choice

__all__ = ["MIN_PATIENCE", "Measured", "Move", "Seen", "plan_moves", "spread"]

MIN_PATIENCE = 5.0
"""Seconds a chunk waits on a system at least before it may move (a queue is never judged on less)."""
PATIENCE_FACTOR = 2.0
"""A chunk moves once it has waited this many times the target's queue wait (or MIN_PATIENCE)."""


@dataclass(frozen=True)
class Measured:
    """A system's recent record: median queue wait (s) and chunks finished per second (None: unknown)."""

    queue_wait: float | None = None
    throughput: float | None = None

    @property
    def known(self) -> bool:
        return self.queue_wait is not None and self.throughput is not None and self.throughput > 0


@dataclass
class Seen:
    """One call's chunks on one system now."""

    waiting: dict[str, float] = field(default_factory=dict)
    """Key -> when it was submitted (local clock), for chunks submitted and not started."""
    started: int = 0
    """Chunks started there (running or done) during this call."""
    first_submitted: float | None = None
    """When this call's first chunk was submitted there."""
    waits: list[float] = field(default_factory=list)
    """This call's queue waits there (submit -> start, s)."""


@dataclass(frozen=True)
class Move:
    key: str
    source: str
    target: str
    reason: str


def spread(count: int, choices: Sequence[Choice], measured: Mapping[str, Measured]) -> list[str]:
    """The system of each of ``count`` chunks, in order.

    Every system measured: each chunk goes where it is expected to start soonest (its queue wait
    plus the chunks already sent there over its throughput). Otherwise by weight, interleaved
    (the chunk goes to the system furthest below its share), the first listed winning ties.
    """
    names = [c.name for c in choices]
    sent = dict.fromkeys(names, 0)
    placed: list[str] = []
    if all(measured.get(n, Measured()).known for n in names):
        for _ in range(count):
            best = min(names, key=lambda n: _expected_start(measured[n], sent[n]))
            sent[best] += 1
            placed.append(best)
        return placed
    total = sum(c.weight for c in choices)
    for i in range(count):
        best = max(choices, key=lambda c: (c.weight / total) * (i + 1) - sent[c.name]).name
        sent[best] += 1
        placed.append(best)
    return placed


def _expected_start(m: Measured, ahead: int) -> float:
    assert m.queue_wait is not None and m.throughput
    return m.queue_wait + ahead / m.throughput


def plan_moves(seen: Mapping[str, Seen], measured: Mapping[str, Measured], moved: set[str],
               now: float) -> list[Move]:
    """Which waiting chunks move now, each at most once in its life (``moved``: keys that moved).

    A target is a system with none of the call's chunks waiting that has started some (it drains).
    A source is a system whose oldest waiting chunk has waited past the patience
    (:data:`PATIENCE_FACTOR` times the target's queue wait, at least :data:`MIN_PATIENCE`).
    The source keeps the share of its waiting chunks its own draining rate earns against the
    target's; its last-submitted chunks (last in its line) move.
    """
    moves: list[Move] = []
    targets = [n for n, s in seen.items() if not s.waiting and s.started > 0]
    if not targets:
        return moves
    for source, s in seen.items():
        candidates = [k for k in s.waiting if k not in moved]
        if source in targets or not candidates:
            continue
        target = min(targets, key=lambda n: _queue_wait(seen[n], measured.get(n)))
        patience = max(MIN_PATIENCE, PATIENCE_FACTOR * _queue_wait(seen[target], measured.get(target)))
        oldest = now - min(s.waiting.values())
        if oldest < patience:
            continue
        rate_source, rate_target = _drain(s, now), _drain(seen[target], now)
        keep = round(len(s.waiting) * rate_source / (rate_source + rate_target)) if rate_source + rate_target else 0
        count = min(len(candidates), len(s.waiting) - keep)
        if count <= 0:
            continue
        reason = (f"{len(s.waiting)} chunk(s) waiting on {source}, the oldest for {oldest:.0f} s, starting "
                  f"{rate_source * 60:.1f}/min there against {rate_target * 60:.1f}/min on {target} "
                  f"(queue wait {_queue_wait(seen[target], measured.get(target)):.0f} s), which has none waiting")
        last_in_line = sorted(candidates, key=lambda k: s.waiting[k], reverse=True)[:count]
        moves.extend(Move(k, source, target, reason) for k in last_in_line)
        targets.remove(target)  # one source per target per round: its own backlog is judged next round
        if not targets:
            break
    return moves


def _queue_wait(s: Seen, m: Measured | None) -> float:
    """This call's median queue wait on the system, else its measured one, else 0."""
    if s.waits:
        ordered = sorted(s.waits)
        return ordered[len(ordered) // 2]
    return m.queue_wait if m is not None and m.queue_wait is not None else 0.0


def _drain(s: Seen, now: float) -> float:
    """Chunks started per second on the system since the call's first submission there."""
    if s.first_submitted is None or s.started == 0:
        return 0.0
    return s.started / max(now - s.first_submitted, 1e-9) if not math.isinf(now) else 0.0
