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
GAIN = 1.5
"""A chunk moves only if it is expected to start this many times sooner on the target (plus the patience)."""
STALL_GAPS = 3.0
"""A system that started none of the call's waiting chunks for this many of its usual gaps has stopped."""
RATE_WINDOW = 60.0
"""Seconds over which a system's rate of starting the call's chunks is measured (a system that turns
slow mid-run shows it within this time)."""


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
    starts: list[float] = field(default_factory=list)
    """When each of the call's chunks started there (running or done)."""
    first_submitted: float | None = None
    """When this call's first chunk was submitted there."""
    waits: list[float] = field(default_factory=list)
    """This call's queue waits there (submit -> start, s)."""

    @property
    def started(self) -> int:
        return len(self.starts)


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

    A chunk waiting at place ``k`` (0: next) in a system's line is expected to start there in
    ``(k + 1) / rate``, its rate the call's chunks started there per second over the last
    :data:`RATE_WINDOW` s (none started lately: never). On a target (a system that started some of
    the call's chunks) a chunk sent now is expected to start after its queue wait if its line is
    empty, else after its line over its rate. A chunk that waited at least the patience
    (:data:`PATIENCE_FACTOR` times the target's queue wait, at least :data:`MIN_PATIENCE`) moves
    when its expected start where it is is :data:`GAIN` times later than on the best target, plus
    the patience; the last in line move first, and each one moved lengthens the target's line.
    """
    rates = {name: _rate(s, now) for name, s in seen.items()}
    # as a target, a system with nothing waiting is idle, not stalled: its pace over the whole call
    pace = {name: rates[name] if rates[name] > 0 or s.waiting or s.first_submitted is None
            else s.started / max(now - s.first_submitted, 1e-9) for name, s in seen.items()}
    lines = {name: len(s.waiting) for name, s in seen.items()}
    targets = [n for n, s in seen.items() if s.started > 0]
    moves: list[Move] = []
    for source, s in seen.items():
        others = [t for t in targets if t != source]
        if not s.waiting or not others:
            continue
        in_line = sorted(s.waiting, key=lambda k: s.waiting[k])
        for place in range(len(in_line) - 1, -1, -1):
            key = in_line[place]
            if key in moved:
                continue
            here = (place + 1) / rates[source] if rates[source] > 0 else math.inf
            target = min(others, key=lambda t: _start_on(seen[t], measured.get(t), lines[t], pace[t]))
            there = _start_on(seen[target], measured.get(target), lines[target], pace[target])
            patience = max(MIN_PATIENCE, PATIENCE_FACTOR * _queue_wait(seen[target], measured.get(target)))
            if now - s.waiting[key] < patience or here <= GAIN * there + patience:
                break  # the chunks before it in line start sooner still
            lines[target] += 1
            moves.append(Move(key, source, target, (
                f"waiting on {source} for {now - s.waiting[key]:.0f} s, {place + 1} in line there, expected to "
                f"start in {_seconds(here)} there against {_seconds(there)} on {target} (started "
                f"{rates[source] * 60:.1f}/min against {pace[target] * 60:.1f}/min lately)")))
    return moves


def _start_on(s: Seen, m: Measured | None, line: int, rate: float) -> float:
    """When a chunk sent to this system now is expected to start (s)."""
    if line == 0:
        return _queue_wait(s, m)
    return (line + 1) / rate if rate > 0 else math.inf


def _rate(s: Seen, now: float) -> float:
    """The call's chunks started on the system per second, over the last RATE_WINDOW s; 0 once it has
    started none for STALL_GAPS times its usual gap between starts (at least MIN_PATIENCE s): a
    queue held mid-run shows within seconds, not a whole window later."""
    if s.first_submitted is None:
        return 0.0
    window = min(RATE_WINDOW, max(now - s.first_submitted, 1e-9))
    recent = [t for t in s.starts if t >= now - window]
    if not recent:
        return 0.0
    rate = len(recent) / window
    return 0.0 if now - max(recent) > max(MIN_PATIENCE, STALL_GAPS / rate) else rate


def _seconds(value: float) -> str:
    return "never (none started lately)" if math.isinf(value) else f"{value:.0f} s"


def _queue_wait(s: Seen, m: Measured | None) -> float:
    """This call's median queue wait on the system, else its measured one, else 0."""
    if s.waits:
        ordered = sorted(s.waits)
        return ordered[len(ordered) // 2]
    return m.queue_wait if m is not None and m.queue_wait is not None else 0.0
