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
import os
import subprocess
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
                coro = task.get_coro()
                print(f"* {task.get_name()} (running now: {getattr(coro, 'cr_running', '?')})", file=out)
                for line in _awaiting(task.get_coro()):
                    print(f"    {line}", file=out)
    print(_children(), file=out)
    print(_native_stacks(), file=out)
    return out.getvalue()


def _native_stacks() -> str:
    """Every thread's stack as py-spy sees it from outside (where a thread spins, not only where it waits)."""
    try:
        found = subprocess.run(["py-spy", "dump", "--locals", "--pid", str(os.getpid())], capture_output=True,
                               text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(no py-spy dump: {exc})"
    return f"--- py-spy dump:\n{found.stdout[-20000:]}{found.stderr[-2000:]}"


def _awaiting(coro: object) -> list[str]:
    """Where a coroutine waits, outermost first: its ``cr_await`` chain (a task's own stack stops at
    its outermost frame)."""
    lines: list[str] = []
    while coro is not None and len(lines) < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or getattr(coro, "gi_yieldfrom", None)
    return lines


def _children() -> str:
    """This process's child processes, with their command lines (a command that never ends)."""
    try:
        found = subprocess.run(["ps", "--ppid", str(os.getpid()), "-o", "pid,etimes,args", "--cols", "300"],
                               capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(no process list: {exc})"
    return f"--- child processes:\n{found}"


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
