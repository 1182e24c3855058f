"""Self-tuning's decisions, pure: chunk size, a task's predicted time, worker walltime and count.

Everything here is computed from measured chunk times, ``(seconds, configurations)`` per
chunk, as the jobs database keeps them per operation and system
(:meth:`~wfl_async.jobs.database.JobsDatabase.measured_times`). A chunk of one configuration
measures that configuration exactly; a chunk of ``n`` bounds its slowest configuration by what it
took beyond ``n - 1`` mean configurations, so the tail is never averaged away (a worker killed at its
walltime costs far more than one that leaves a little early).

A task is predicted to take its configurations at the mean plus, for one of them, the slowest
configuration measured: the largest of ``m`` measured bounds about the ``1 - 1/m`` quantile, so it
is trusted only once :data:`TAIL_CONFIGURATIONS` are measured (a 99 % bound). Before that the tail is
unknown, and a task may take as long as a fresh worker has (:func:`longest_fitting`): on a
heavy-tailed workload the one slow configuration in a hundred is then started only by a worker
with the time to finish it. No I/O and no clock here (docs/self-tuning.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["FIRST_TASKS_PER_WORKER", "MIN_SAMPLES", "TASKS_PER_WORKER", "TAIL_CONFIGURATIONS", "Estimate",
           "chunk_size", "estimate", "fit_margin", "fits", "longest_fitting", "worker_walltime",
           "workers_wanted"]

MIN_SAMPLES = 4
"""Chunks measured before the chunk size grows past one configuration."""
GROWTH = 8
"""A task holds at most one configuration per this many measured: a tail the few first measurements
have not seen cannot hide in a large early task (one that no walltime fits is killed every time)."""
FIRST_TASKS_PER_WORKER = 2
"""With nothing measured, tasks of one configuration planned per worker before the first results."""
TASKS_PER_WORKER = 4
"""Tasks planned and not finished per worker once times are measured: the one it runs and three
queued, so a worker never waits for the driver to see a result and plan the next task."""
TAIL_CONFIGURATIONS = 100
"""Configurations measured before the slowest of them is trusted as a bound of the next ones (the
largest of ``m`` bounds about the ``1 - 1/m`` quantile: 100 give a 99 % bound)."""
WORKER_START_SECONDS = 20.0
"""A worker's own start (queue to Python to its first claim): kept free in its walltime."""
START_FRACTION = 0.25
"""Part of a fresh worker's walltime, if more than :data:`WORKER_START_SECONDS`, in which it may start
a task as long as any it takes (:func:`longest_fitting`): its start, then its first tasks (while the
tail is not known, the only ones it takes)."""
MIN_FIT_MARGIN = 5.0
"""Seconds a worker keeps free at least after a task's predicted end (its result written, the
clocks of the job script and of the scheduler a second apart)."""
FIT_FRACTION = 0.05
"""Part of a task's predicted time a worker keeps free beyond it, if more than :data:`MIN_FIT_MARGIN`:
the prediction already bounds the slowest configuration by the slowest measured."""
WINDOW_FRACTION = 0.2
"""A task's configurations beyond its slowest take at most this part of what a worker has beyond
its start and the slowest configuration: a larger task raises the time a worker must have left to
take one, so workers stop taking tasks earlier."""
SLURM_MINUTE = 60
"""Walltimes are whole minutes: Slurm rounds a time limit up to them (a worker told the rounded
time uses all it was given)."""


@dataclass(frozen=True)
class Estimate:
    """Per-configuration times of one operation on one system, as measured."""

    samples: int
    """Chunks measured."""
    mean: float
    """Mean seconds per configuration (all measured chunks)."""
    largest: float
    """The slowest configuration measured: the largest excess of a chunk over its other
    configurations at the mean (for a chunk of one configuration: that configuration's time)."""
    configurations: int = 0
    """Configurations measured (all chunks)."""
    unbiased: int | None = None
    """Of them, those that are a fair sample of the tail (None: all). A call's configurations that
    finished while an earlier one still runs are not: the slow ones are measured last."""

    @property
    def high(self) -> float:
        """What one configuration of a task may take: :attr:`largest` once :data:`TAIL_CONFIGURATIONS`
        are fairly measured, else unknown (``inf``: as long as a fresh worker has, :func:`longest_fitting`)."""
        fair = self.configurations if self.unbiased is None else self.unbiased
        return max(self.largest, self.mean) if fair >= TAIL_CONFIGURATIONS else math.inf

    def predict(self, configurations: int) -> float:
        """Seconds a task of ``configurations`` is expected to take at most: its configurations at the
        mean, and :attr:`high` for one of them (``inf``: the tail is not known yet)."""
        return max(0.0, configurations - 1) * self.mean + self.high


def estimate(measured: Iterable[tuple[float, int]], unbiased: int | None = None) -> Estimate | None:
    """The :class:`Estimate` of measured ``(seconds, configurations)`` chunks (``unbiased`` of their
    configurations a fair sample of the tail, None: all); None: nothing measured."""
    rows = [(max(0.0, s), n) for s, n in measured if n > 0]
    if not rows:
        return None
    mean = sum(s for s, _ in rows) / sum(n for _, n in rows)
    largest = max(s - (n - 1) * mean for s, n in rows)
    return Estimate(samples=len(rows), mean=mean, largest=largest, configurations=sum(n for _, n in rows),
                    unbiased=unbiased)


def chunk_size(found: Estimate | None, *, target_seconds: float, remaining: int, workers: int,
               walltime: float) -> int:
    """Configurations for the next task.

    One while fewer than :data:`MIN_SAMPLES` chunks are measured (start small, learn fast). Then
    as many as take ``target_seconds`` on average, but no more than leaves every worker two
    tasks of what remains (the call's end stays balanced), no more than one per :data:`GROWTH`
    configurations measured (grow as the measurements do), and no more than take
    :data:`WINDOW_FRACTION` of what a worker of ``walltime`` has beyond its start and the slowest
    configuration measured (a task's prediction stays short next to its worker's walltime).
    """
    if found is None or found.samples < MIN_SAMPLES or remaining <= 1:
        return 1
    size = max(1, int(target_seconds / max(found.mean, 1e-3)))
    size = min(size, max(1, remaining // (2 * max(1, workers))), max(1, found.configurations // GROWTH))
    if walltime:
        spare = walltime - WORKER_START_SECONDS - fit_margin(found.largest) - found.largest
        size = min(size, 1 + int(WINDOW_FRACTION * max(0.0, spare) / max(found.mean, 1e-3)))
    return max(1, min(size, remaining))


def longest_fitting(walltime: float) -> float:
    """The longest prediction a fresh worker of ``walltime`` s takes (its start and margin kept free).

    A task whose prediction is longer (or unknown: the tail not measured yet) is staged with this
    prediction instead: only a fresh worker of the longest walltime runs it (escalated if killed).
    """
    room = max(0.0, walltime - max(WORKER_START_SECONDS, START_FRACTION * walltime))
    return max(0.0, min(room - MIN_FIT_MARGIN, room / (1 + FIT_FRACTION)))


def fit_margin(predicted: float) -> float:
    """Seconds a worker keeps free after a task's predicted end: :data:`FIT_FRACTION` of it, at least
    :data:`MIN_FIT_MARGIN`."""
    return max(MIN_FIT_MARGIN, FIT_FRACTION * predicted)


def fits(predicted: float | None, left: float, longest_so_far: float, unknown_margin: float) -> bool:
    """Whether a task predicted to take ``predicted`` s can finish in the ``left`` s of a worker's walltime.

    A task with no prediction (queued by a call that is not self-tuned) goes by the worker's own
    rule: at least ``unknown_margin`` left, and twice the longest task it ran so far.
    """
    if predicted is None:
        return left > max(unknown_margin, 2 * longest_so_far)
    return predicted + fit_margin(predicted) <= left


def worker_walltime(*, longest: float, backlog: float, workers: int, cap: float) -> int:
    """Walltime (s) of a worker to submit now: the longest task waiting fits, with its margin, and
    the worker can take its share of the ``backlog`` (s of predicted work) if ``cap`` allows; whole
    minutes (:data:`SLURM_MINUTE`) within ``cap``."""
    fit_longest = longest + fit_margin(longest) + WORKER_START_SECONDS
    share = backlog / max(1, workers) + WORKER_START_SECONDS
    wanted = max(fit_longest, share, 2 * WORKER_START_SECONDS)
    return int(min(cap, SLURM_MINUTE * math.ceil(wanted / SLURM_MINUTE)))


def workers_wanted(*, max_workers: int, backlog: float) -> int:
    """Workers worth running for ``backlog`` s of predicted work: all ``max_workers`` while each
    has at least two of its start-ups' worth of work, fewer near the end (a worker's start and
    idle end cost core-seconds)."""
    useful = max(1.0, 2 * WORKER_START_SECONDS)
    return max(1, min(max_workers, math.ceil(backlog / useful)))
