"""Python's cyclic garbage collector while jobs are waited for: the state from before them frozen.

A full collection walks every object the collector tracks, and one comes each time the objects
that survived a younger collection grew by a quarter of those it walked last. A call of 10^5
chunks holds millions of objects for its whole length (each chunk's prepared job and inputs, the
caller's own data) and makes millions of short-lived ones, so full collections walked the same
long-lived objects again and again: the collector's share of the driver's CPU per chunk grew with
N (0.056 ms at 2,000 chunks, 0.11-0.13 ms at 100,000; docs/benchmark.md).

While a :class:`~wfl_async.job.JobWaiter` serves, what existed when it started is moved to the
collector's permanent generation (:func:`gc.freeze`) and put back when the last waiter ends
(:func:`gc.unfreeze`). Objects are still freed by their reference counts as usual; only a reference
cycle among the frozen objects that becomes garbage during the wait is collected later, at the
first full collection after it: memory bounded by what the process held when the wait started.
A process that froze objects itself (``gc.get_freeze_count() > 0``: a pre-fork server) or turned the
collector off is left as it is.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["long_lived_frozen"]

_lock = threading.Lock()
_holders = 0
_ours = False
"""True while the frozen generation is ours to unfreeze (nobody else had frozen anything)."""


@contextlib.contextmanager
def long_lived_frozen() -> Iterator[None]:
    """Freeze the objects alive now while inside (nested and concurrent uses share one freeze)."""
    global _holders, _ours
    with _lock:
        if _holders == 0:
            _ours = gc.isenabled() and gc.get_freeze_count() == 0
        _holders += 1
        if _ours:
            gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _ours:
                _ours = False
                gc.unfreeze()
