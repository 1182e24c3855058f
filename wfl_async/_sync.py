"""run_sync: the one synchronous twin of every async entry point.

Coroutines run on one process-wide event loop in a background thread (an anyio blocking
portal, started on first use and stopped at exit), not on a loop of the caller's. So:

- a sync call works even where an event loop already runs in the calling thread (Jupyter),
  where ``anyio.run``/``asyncio.run`` would refuse;
- successive sync calls share one loop, so connections opened by one call (e.g. ssh) are
  still usable by the next;
- Ctrl-C in the calling thread cancels the coroutine, waits for its clean-up, and raises
  :class:`~wfl_async.errors.Interrupted` (a KeyboardInterrupt) whose one line says how many
  jobs stay queued; uncaught, that line is all the user sees (no traceback).

A forked child (e.g. a pool worker) gets its own loop on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from .errors import USER_FIXABLE

if TYPE_CHECKING:
    from anyio import CancelScope
    from anyio.from_thread import BlockingPortal

__all__ = ["run_sync"]

P = ParamSpec("P")
T = TypeVar("T")

_WAKE_SECONDS = 0.25  # wait in slices so signals reach the calling thread promptly
_CLEANUP_SECONDS = 60.0  # how long Ctrl-C waits for the cancelled coroutine's clean-up

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
_portal_thread: int | None = None
_portal_pid: int | None = None


def _get_portal() -> BlockingPortal:
    global _portal, _portal_cm, _portal_thread, _portal_pid
    # Import the backend HERE, in the calling thread, not in the new loop thread: a Ctrl-C that
    # lands in the middle of an import can leave a module lock held by this thread, and a loop
    # thread importing the same module would then wait for it forever while we wait for the loop.
    import anyio._backends._asyncio  # noqa: F401
    from anyio.from_thread import start_blocking_portal  # here: importing wfl_async stays light

    with _lock:
        if _portal is None or _portal_pid != os.getpid():
            cm = start_blocking_portal("asyncio", name="wfl_async-event-loop")
            portal = cm.__enter__()
            _portal_thread = portal.call(threading.get_ident)
            _portal, _portal_cm, _portal_pid = portal, cm, os.getpid()
        return _portal


@atexit.register
def _stop_portal() -> None:
    global _portal, _portal_cm
    with _lock:
        portal, cm = _portal, _portal_cm
        _portal = _portal_cm = None
    if portal is None or cm is None or _portal_pid != os.getpid():
        return
    with contextlib.suppress(Exception):
        portal.call(portal.stop, True)  # cancel whatever still runs
    with contextlib.suppress(Exception):
        cm.__exit__(None, None, None)


class _Cancel:
    """Lets the calling thread cancel the task, whether or not the task has started yet."""

    def __init__(self) -> None:
        self.requested = False
        self.scope: CancelScope | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.finished = threading.Event()
        self.base_exception: BaseException | None = None


def run_sync(async_fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``async_fn(*args, **kwargs)`` on wfl_async's event loop thread and return its result.

    :raises RuntimeError: called from that event loop's own thread (``await`` it instead)
    :raises KeyboardInterrupt: interrupted; the coroutine has been cancelled
    """
    from anyio import CancelScope, get_cancelled_exc_class

    portal = _get_portal()
    if threading.get_ident() == _portal_thread:
        raise RuntimeError("a synchronous wfl_async call was made from wfl_async's own event loop; "
                           "use the awaitable form (await X.aio(...)) in async code")
    cancel = _Cancel()

    async def wrapper() -> T:
        try:
            with CancelScope() as scope:
                cancel.loop = asyncio.get_running_loop()
                cancel.scope = scope
                if cancel.requested:  # Ctrl-C came while the task was being started
                    scope.cancel()
                try:
                    return await async_fn(*args, **kwargs)
                except (Exception, get_cancelled_exc_class()):
                    raise
                except BaseException as exc:  # e.g. SystemExit: would stop the shared loop, hand it over
                    cancel.base_exception = exc
                    return cast(T, None)
            return cast(T, None)  # cancelled by the caller, who raises KeyboardInterrupt itself
        finally:
            cancel.finished.set()

    try:
        future = portal.start_task_soon(wrapper)
        while True:
            try:
                result = future.result(timeout=_WAKE_SECONDS)
            except FutureTimeout:
                continue
            except USER_FIXABLE:
                _short_messages_at_exit()  # uncaught, it prints its message, not 40 lines of frames
                raise
            if cancel.base_exception is not None:
                raise cancel.base_exception
            return result
    except KeyboardInterrupt:
        left = 0
        try:  # a second Ctrl-C anywhere in here stops now (not only while waiting for the clean-up)
            left = _unfinished_jobs()
            _say_what_ctrl_c_waits_for()
            cancel.requested = True
            scope = cancel.scope
            if scope is not None and cancel.loop is not None:
                # not portal.call: it waits for the loop, which may be busy for seconds (a loaded
                # machine, a long thread hop), and a second Ctrl-C would land in anyio's frames
                with contextlib.suppress(RuntimeError):  # the loop has just stopped
                    cancel.loop.call_soon_threadsafe(scope.cancel)
            _short_messages_at_exit()
            cancel.finished.wait(_CLEANUP_SECONDS)
        except KeyboardInterrupt:  # the second Ctrl-C: stop now
            _stop_now(left)
        raise _interrupted(left) from None


def _say_what_ctrl_c_waits_for() -> None:
    """The first Ctrl-C's line, at once: what the clean-up waits for, and that a second one stops now."""
    import sys

    from .progress import submitting_jobs

    busy = submitting_jobs()
    what = f"finishing the submission of {busy} job(s)" if busy else "recording what was submitted"
    sys.stderr.write(f"wfl_async: stopping: {what}, up to {_CLEANUP_SECONDS:.0f} s; Ctrl-C again to stop now "
                     f"- the next run re-attaches\n")
    sys.stderr.flush()


def _stop_now(left: int) -> None:
    """The second Ctrl-C: leave at once. A script's process ends here, as a kill would end it (which
    loses nothing: a submission cut short is resolved by the next run through its remote lock);
    an interactive session keeps its loop, where the clean-up finishes in the background."""
    import sys

    if hasattr(sys, "ps1") or sys.flags.interactive or "IPython" in sys.modules:
        raise _interrupted(left) from None
    sys.stderr.write(f"{_interrupted(left)}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(130)


def _unfinished_jobs() -> int:
    from .progress import unfinished_jobs

    return unfinished_jobs()


def _interrupted(left: int) -> BaseException:
    from .errors import Interrupted

    jobs = (f"{left} unfinished job(s) stay queued on their systems" if left
            else "submitted jobs stay queued on their systems")
    return Interrupted(f"wfl_async: interrupted; {jobs}: rerun the same script to re-attach to them "
                       f"(or 'wfl-async cancel' to cancel them)")


def _short_messages_at_exit() -> None:
    """An uncaught :class:`Interrupted`, or an error the user can fix (:data:`USER_FIXABLE`), prints
    its message, not a traceback through wfl_async's and concurrent.futures' frames; set
    ``WFL_ASYNC_TRACEBACK=1`` for the whole traceback."""
    import sys

    from .errors import Interrupted

    previous = sys.excepthook
    if getattr(previous, "_wfl_async_quiet", False):
        return

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if isinstance(value, Interrupted):
            sys.stderr.write(f"{value}\n")
            return
        if isinstance(value, USER_FIXABLE) and os.environ.get("WFL_ASYNC_TRACEBACK", "") in ("", "0"):
            notes = "".join(f"\n{note}" for note in getattr(value, "__notes__", []))
            sys.stderr.write(f"wfl_async: {type(value).__name__}: {value}{notes}\n"
                             f"(the traceback: rerun with WFL_ASYNC_TRACEBACK=1)\n")
            return
        previous(kind, value, tb)

    hook._wfl_async_quiet = True  # type: ignore[attr-defined]
    sys.excepthook = hook
