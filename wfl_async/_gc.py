"""Python's cyclic garbage collector while jobs are waited for: the state from before them frozen.

A full collection walks every object the collector tracks, and one comes each time the objects
that survived a younger collection grew by a quarter of those it walked last. A call of 10^5
chunks holds millions of objects for its whole length (each chunk's prepared job and inputs, the
caller's own data) and makes millions of short-lived ones, so full collections walked the same
long-lived objects again and again: the collector's share of the driver's CPU per chunk grew with
N (0.056 ms at 2,000 chunks, 0.11-0.13 ms at 100,000; docs/benchmark.md).

While a :class:`~wfl_async.job.JobWaiter` serves (and for the whole of an autoparallelized call,
its chunks' preparing included: :func:`wfl_async.autoparallelize.remote.iter_remote`), what existed
when it started is moved to the collector's permanent generation (:func:`gc.freeze`) and put back when the last waiter ends
(:func:`gc.unfreeze`). The first waiter collects first (one full collection per wait, not per chunk):
garbage frozen would stay for the whole wait (without it, the third of three 100,000-chunk calls in one
process peaked at 525 MiB against 311 MiB before the freeze: the likely cause, not measured apart). Objects are still freed by their reference counts as
usual; only a reference cycle among the frozen objects that becomes garbage during the wait is
collected later, at the first full collection after it: memory bounded by what the process held
when the wait started.
The youngest generation's threshold is raised to :data:`YOUNG_THRESHOLD` meanwhile (Python 3.13's
default is 2,000, 3.11's 700): a chunk's short-lived objects (its claim, its watch, its fetched
result on the way to the caller) mostly die before a young collection, instead of being walked and
moved to an older generation first. The young count is lowered by every tracked object freed,
whatever its generation, so while finished chunks leave memory a young collection walks far more
objects than the threshold (6.8 ms each at 10,000, measured); what decides the cost is how often
one comes, not its threshold. At most that many young objects that are cyclic garbage wait for a
collection (a call's young collections found 0-920 in all at 100,000 chunks, measured). The threshold is
put back at the end unless someone changed it meanwhile. Measured with benchmarks/driver_cost.py
(docs/benchmark.md), the collector's CPU per chunk: 0.10-0.12 ms at 10,000 packed chunks, 0.065-0.086
with the freeze, 0.015 with both (threshold 10,000); at 100,000 packed chunks 0.042 with a threshold
of 10,000 and 0.005 with 100,000; an autoparallelized call of 10,000 chunks 0.073 -> 0.011, its rerun 0.077 -> 0.027.

A process that froze objects itself (``gc.get_freeze_count() > 0``: a pre-fork server) or turned the
collector off is left as it is.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["YOUNG_THRESHOLD", "long_lived_frozen"]

YOUNG_THRESHOLD = 100_000
"""The youngest generation's threshold while jobs are waited for (if it was lower): 10,000 before, when
young collections were most of the collector's CPU per chunk (above)."""

_lock = threading.Lock()
_holders = 0
_ours = False
"""True while the frozen generation is ours to unfreeze (nobody else had frozen anything)."""
_thresholds: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
"""The thresholds before ours, and ours (put back only if they are still ours)."""


@contextlib.contextmanager
def long_lived_frozen() -> Iterator[None]:
    """Freeze the objects alive now while inside, young collections less often (nested and concurrent
    uses share one policy)."""
    global _holders, _ours, _thresholds
    with _lock:
        if _holders == 0:
            _ours = gc.isenabled() and gc.get_freeze_count() == 0
            before = gc.get_threshold()
            if _ours and 0 < before[0] < YOUNG_THRESHOLD:
                gc.set_threshold(YOUNG_THRESHOLD, before[1], before[2])
                _thresholds = (before, gc.get_threshold())
        _holders += 1
        if _ours:
            if _holders == 1:  # garbage frozen would stay for the whole wait (an earlier call's)
                gc.collect()
            gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _ours:
                _ours = False
                gc.unfreeze()
                if _thresholds is not None and gc.get_threshold() == _thresholds[1]:
                    gc.set_threshold(*_thresholds[0])
                _thresholds = None
