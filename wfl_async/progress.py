"""Live progress of long autoparallelized calls, one line per call, and a summary line when it ends.

``<system>: <job name> [bar] [waiting W] queued Q running R done D failed F [(in A job arrays)] [| workers W] | configs N/M | rate | ETA``

(*waiting*: jobs held back locally because the system's ``max_queued_jobs`` window is full,
shown only while there are some; *in A job arrays*: how many arrays the call's unfinished jobs
are tasks of (docs/arrays.md); *workers*: the worker jobs alive on the system, for a packed
call (docs/packing.md).)

Shown by default when stderr is a terminal; off when it is not, or with
``WFL_ASYNC_PROGRESS=0`` (``1`` forces it on). Every active call in the process shares one
rich display, so concurrent operations on several systems stack their lines. Counts are the
call's own (its jobs, not its system's): done and failed only grow, queued only shrinks. Each
line fits the terminal's width (never wrapped), so a resize redraws cleanly: narrower than the
whole line, it becomes ``done D/T [failed F] | ETA | ...`` with what else fits.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from .system import System

__all__ = ["CallCounts", "Progress", "progress_enabled", "submitting_jobs", "unfinished_jobs"]

_shared: dict[str, Any] = {"display": None, "users": 0}
_BAR_WIDTH = 20
_active: set[Progress] = set()


def progress_enabled() -> bool:
    setting = os.environ.get("WFL_ASYNC_PROGRESS")
    if setting is not None:
        return setting not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def unfinished_jobs() -> int:
    """Jobs of the calls running now that have no result yet (what Ctrl-C leaves queued)."""
    return sum(p.counts.total_chunks - p.counts.done_chunks - p.counts.failed_chunks for p in list(_active))


def submitting_jobs() -> int:
    """Jobs of the running calls' systems whose submission command is running now (what a first
    Ctrl-C waits for, so that none is left submitted but unrecorded)."""
    systems = {id(p.system): p.system for p in list(_active) if p.system is not None}
    return sum(system.submitting_count() for system in systems.values())


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


@dataclass
class CallCounts:
    """What one call has done so far; also the source of its progress line."""

    total_chunks: int
    total_items: int
    done_chunks: int = 0
    failed_chunks: int = 0
    done_items: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        """Configurations per second since the call started."""
        elapsed = time.monotonic() - self.started_at
        return self.done_items / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left at the current rate, or None before the first result."""
        rate = self.rate()
        return (self.total_items - self.done_items) / rate if rate > 0 else None


class Progress:
    """Progress of one call; a context manager that shows its line and leaves a summary.

    :param running: how many of *this call's* jobs run now (default: none known)
    :param waiting: how many of *this call's* jobs wait locally for room in the queue window
    :param workers: how many worker jobs are alive on the system, for a packed call (docs/packing.md)
    :param arrays: how many job arrays this call's unfinished jobs are tasks of (docs/arrays.md)
    :param predicted_left: seconds to the call's end predicted from measured times (a self-tuned
        call, docs/self-tuning.md); None or absent: the ETA is the call's own rate so far
    """

    def __init__(self, label: str, system: System | None, counts: CallCounts, enabled: bool,
                 running: Callable[[], int] | None = None, waiting: Callable[[], int] | None = None,
                 workers: Callable[[], int] | None = None, arrays: Callable[[], int] | None = None,
                 detail: Callable[[], str] | None = None,
                 predicted_left: Callable[[], float | None] | None = None) -> None:
        self.label = label
        self._detail = detail
        self._predicted_left = predicted_left
        self.system = system
        self.counts = counts
        self.enabled = enabled
        self._running = running or (lambda: 0)
        self._waiting = waiting or (lambda: 0)
        self._workers = workers
        self._arrays = arrays or (lambda: 0)
        self._queued = counts.total_chunks
        self._task: TaskID | None = None

    @classmethod
    def for_call(cls, job_name: str, system: System | None, *, total_chunks: int, total_items: int,
                 enabled: bool | None = None, running: Callable[[], int] | None = None,
                 waiting: Callable[[], int] | None = None, workers: Callable[[], int] | None = None,
                 arrays: Callable[[], int] | None = None, detail: Callable[[], str] | None = None,
                 predicted_left: Callable[[], float | None] | None = None) -> Progress:
        """:param detail: more of the line, after the counts (a call over several systems: each one's counts)
        :param predicted_left: seconds to the call's end from measured times (a self-tuned call), or None"""
        label = f"{system.name}: {job_name}" if system is not None else job_name
        return cls(label, system, CallCounts(total_chunks, total_items),
                   progress_enabled() if enabled is None else enabled, running, waiting, workers, arrays, detail,
                   predicted_left)

    def eta(self) -> float | None:
        """Seconds to the call's end: predicted from measured times where the call has them, else at its rate so far."""
        predicted = self._predicted_left() if self._predicted_left is not None else None
        return predicted if predicted is not None else self.counts.eta()

    def chunks_added(self, count: int) -> None:
        """A self-tuned call planned ``count`` more chunks (it plans them as results come back)."""
        self.counts.total_chunks += count
        self._queued += count

    def chunk_done(self, items: int, *, failed: bool = False) -> None:
        if failed:
            self.counts.failed_chunks += 1
        else:
            self.counts.done_chunks += 1
            self.counts.done_items += items
        if self._task is not None:
            self._display().update(self._task, completed=self.counts.done_items)

    def running(self) -> int:
        """This call's jobs running now, never more than those without a result."""
        c = self.counts
        return max(0, min(self._running(), c.total_chunks - c.done_chunks - c.failed_chunks))

    def queued(self) -> int:
        """This call's jobs neither running nor finished (waiting ones included); only ever goes down."""
        c = self.counts
        self._queued = max(0, min(self._queued, c.total_chunks - c.done_chunks - c.failed_chunks - self.running()))
        return self._queued

    def waiting(self) -> int:
        """Of :meth:`queued`, the jobs not sent yet: they wait for room in the system's queue window."""
        return max(0, min(self._waiting(), self.queued()))

    def summary(self, width: int | None = None) -> str:
        """The line's text (also used by tests and the benchmark); longer than ``width``, the
        compact form that keeps done/total, failures and the ETA first (:meth:`compact`)."""
        full = self._full_summary()
        return full if width is None or len(full) <= width else self.compact(width)

    def compact(self, width: int) -> str:
        """At most ``width`` characters: done/total and the ETA always, then what else fits, most useful first."""
        c = self.counts
        eta = self.eta()
        head = f"done {c.done_chunks}/{c.total_chunks}" + (f" failed {c.failed_chunks}" if c.failed_chunks else "")
        parts = [head, f"ETA {'?' if eta is None else f'{eta:.0f}s'}"]
        optional = [f"running {self.running()}", f"queued {self.queued()}", f"configs {c.done_items}/{c.total_items}",
                    *([f"workers {self._workers()}"] if self._workers is not None else []), f"{c.rate():.1f}/s"]
        for part in optional:
            if len(" | ".join([*parts, part])) <= width:
                parts.append(part)
        return " | ".join(parts)[:width]  # longer only if done/total and the ETA alone do not fit

    def _full_summary(self) -> str:
        c = self.counts
        eta = self.eta()
        waiting = self.waiting()
        workers = f" | workers {self._workers()}" if self._workers is not None else ""
        arrays = self._arrays()
        in_arrays = f" (in {arrays} job array{'s' if arrays != 1 else ''})" if arrays else ""
        return ((f"waiting {waiting} " if waiting else "")
                + f"queued {self.queued() - waiting} running {self.running()} done {c.done_chunks} "
                  f"failed {c.failed_chunks}{in_arrays}{workers} | "
                f"configs {c.done_items}/{c.total_items} | {c.rate():.1f}/s | "
                f"ETA {'?' if eta is None else f'{eta:.0f}s'}"
                + (f" | {self._detail()}" if self._detail is not None else ""))

    def final_line(self) -> str:
        """The line left on the terminal when the call ends."""
        c = self.counts
        unfinished = c.total_chunks - c.done_chunks - c.failed_chunks
        return (f"{self.label}: {c.done_chunks} done, {c.failed_chunks} failed"
                + (f", {unfinished} unfinished" if unfinished else "")
                + f" of {c.total_chunks} jobs; configs {c.done_items}/{c.total_items} in "
                  f"{time.monotonic() - c.started_at:.1f} s")

    def _display(self) -> RichProgress:
        return _shared["display"]

    def __enter__(self) -> Progress:
        _active.add(self)
        if self.enabled:
            from rich.progress import BarColumn, ProgressColumn, TextColumn
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            class SummaryColumn(ProgressColumn):
                def render(self, task: Any) -> Text:
                    # what the label and the bar leave of the terminal: cut the line's least useful parts
                    room = _shared["display"].console.width - len(task.description) - _BAR_WIDTH - 3
                    return Text(task.fields["line"].summary(max(room, 20)), no_wrap=True, overflow="ellipsis")

            if _shared["display"] is None:
                display = RichProgress(TextColumn("{task.description}", markup=False), BarColumn(bar_width=_BAR_WIDTH),
                                       SummaryColumn(), console=_console(), refresh_per_second=2,
                                       redirect_stderr=False, redirect_stdout=False)
                display.start()
                _shared["display"] = display
            _shared["users"] += 1
            self._task = self._display().add_task(self.label, total=self.counts.total_items, line=self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _active.discard(self)
        if self._task is None:
            return
        display = self._display()
        display.remove_task(self._task)
        display.console.print(self.final_line(), markup=False, highlight=False, soft_wrap=True)
        self._task = None
        _shared["users"] -= 1
        if _shared["users"] == 0:
            display.stop()
            _shared["display"] = None
