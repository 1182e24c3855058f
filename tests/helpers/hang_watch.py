"""Two guards for a test that hangs until pytest-timeout stops it.

* :func:`watch_for_hang`: shortly before the timeout, print every asyncio task of every
  wfl_async event loop (the test's and the sync wrapper's) with its stack into the test's
  captured output: pytest-timeout shows only the threads, which all wait in ``select``, while
  what hangs is a coroutine.
* :func:`drop_stale_sessions`: a test stopped by its timeout leaves its session open on the
  session-scoped test loop, and every later test of that pytest-xdist worker would join it (its
  jobs database, its config): one hang then failed five tests after it. The next test gets a
  session of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import threading
from collections.abc import Iterator

from wfl_async import session

DUMP_BEFORE_TIMEOUT = 20.0
"""Seconds before pytest-timeout's own stop that the tasks are printed."""


def _loops() -> list[asyncio.AbstractEventLoop]:
    """The loops with a wfl_async session open: sessions are kept per loop (the test's, the sync wrapper's)."""
    return [loop for loop in list(session._sessions) if isinstance(loop, asyncio.AbstractEventLoop)]


def dump_tasks(title: str) -> str:
    """Every task of every known loop with its stack (best effort: read from another thread)."""
    out = io.StringIO()
    print(f"===== asyncio tasks while {title} hangs =====", file=out)
    for loop in _loops():
        for _ in range(3):  # the set of tasks may change while it is read
            try:
                tasks = list(asyncio.all_tasks(loop))
                break
            except RuntimeError:
                continue
        else:
            tasks = []
        print(f"--- loop {id(loop):#x}: {len(tasks)} task(s)", file=out)
        for task in tasks:
            with contextlib.suppress(Exception):
                task.print_stack(limit=12, file=out)
    return out.getvalue()


@contextlib.contextmanager
def watch_for_hang(name: str, timeout: float) -> Iterator[None]:
    """Print the tasks to stderr if the test still runs ``DUMP_BEFORE_TIMEOUT`` s before ``timeout``."""
    if timeout <= 2 * DUMP_BEFORE_TIMEOUT:
        yield
        return
    timer = threading.Timer(timeout - DUMP_BEFORE_TIMEOUT, lambda: print(dump_tasks(name), file=sys.stderr))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def drop_stale_sessions() -> list[str]:
    """Forget sessions still open after a test; return a line for each (for the test's report)."""
    stale = [f"session {id(s):#x} with {s._users} user(s) left open" for s in session._sessions.values()]
    session._sessions.clear()
    return stale
