"""Live progress of long autoparallelized calls, one line per call.

``<system>: <job name>  queued Q  running R  done D  failed F  [bar] configs N/M  rate  ETA``

Shown by default when stderr is a terminal; off when it is not, or with
``WFL_ASYNC_PROGRESS=0`` (``1`` forces it on). Every active call in the process shares one
rich display, so concurrent operations on several systems stack their lines.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from .system import System

__all__ = ["CallCounts", "Progress"]

_shared: dict[str, Any] = {"display": None, "users": 0}


def progress_enabled() -> bool:
    setting = os.environ.get("WFL_ASYNC_PROGRESS")
    if setting is not None:
        return setting not in ("0", "", "false", "no")
    return sys.stderr.isatty()


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
    """Progress of one call; a context manager that shows and removes its line."""

    def __init__(self, label: str, system: System | None, counts: CallCounts, enabled: bool) -> None:
        self.label = label
        self.system = system
        self.counts = counts
        self.enabled = enabled
        self._task: TaskID | None = None

    @classmethod
    def for_call(cls, job_name: str, system: System | None, *, total_chunks: int, total_items: int,
                 enabled: bool | None = None) -> Progress:
        label = f"{system.name}: {job_name}" if system is not None else job_name
        return cls(label, system, CallCounts(total_chunks, total_items),
                   progress_enabled() if enabled is None else enabled)

    def chunk_done(self, items: int, *, failed: bool = False) -> None:
        if failed:
            self.counts.failed_chunks += 1
        else:
            self.counts.done_chunks += 1
            self.counts.done_items += items
        if self._task is not None:
            self._display().update(self._task, completed=self.counts.done_items)

    def summary(self) -> str:
        """The line's text (also used by tests and the benchmark)."""
        c = self.counts
        running = self.system.running_count() if self.system is not None else 0
        watched = self.system.watched_count() if self.system is not None else 0
        queued = max(0, c.total_chunks - c.done_chunks - c.failed_chunks - running)
        eta = c.eta()
        return (f"queued {queued} running {running} done {c.done_chunks} failed {c.failed_chunks} | "
                f"configs {c.done_items}/{c.total_items} | {c.rate():.1f}/s | "
                f"ETA {'?' if eta is None else f'{eta:.0f}s'} | watched {watched}")

    def _display(self) -> RichProgress:
        return _shared["display"]

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, ProgressColumn, TextColumn
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            class SummaryColumn(ProgressColumn):
                def render(self, task: Any) -> Text:
                    return Text(task.fields["line"].summary())

            if _shared["display"] is None:
                display = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                       SummaryColumn(),
                                       console=Console(stderr=True), refresh_per_second=2)
                display.start()
                _shared["display"] = display
            _shared["users"] += 1
            self._task = self._display().add_task(self.label, total=self.counts.total_items, line=self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._task is None:
            return
        display = self._display()
        display.remove_task(self._task)
        self._task = None
        _shared["users"] -= 1
        if _shared["users"] == 0:
            display.stop()
            _shared["display"] = None
