"""Tables for the terminal (rich), plain aligned text when piped, JSON on request."""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..jobs.database import JobRecord, JobStatus
from ._actions import Report

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(value: str) -> Text:
    """``value`` shown as it is: never read as rich markup, control characters made visible."""
    return Text(_CONTROL.sub(lambda m: repr(m.group())[1:-1], value))

__all__ = ["console", "jobs_table", "record_dict", "report_table", "status_table"]

_STYLE = {JobStatus.SUCCEEDED: "green", JobStatus.FAILED: "red", JobStatus.DIED: "red",
          JobStatus.STARTED: "cyan", JobStatus.SUBMITTED: "blue", JobStatus.CREATED: "yellow",
          JobStatus.PROCESSED: "dim green", JobStatus.CLEANED: "dim"}
_SUMMARY = (("created", (JobStatus.CREATED,)), ("queued", (JobStatus.SUBMITTED,)),
            ("running", (JobStatus.STARTED,)), ("done", (JobStatus.SUCCEEDED, JobStatus.PROCESSED)),
            ("failed", (JobStatus.FAILED,)), ("died", (JobStatus.DIED,)), ("cleaned", (JobStatus.CLEANED,)))
"""Columns of ``status``: queued means accepted by the scheduler, running means the worker started."""


def console(*, wide: bool = False) -> Console:
    """A console on click's current stdout; never truncates when piped (or when ``wide``)."""
    stream = sys.stdout
    tty = stream.isatty()
    unlimited = wide or not tty
    return Console(file=stream, width=100_000 if unlimited else None, no_color=not tty, highlight=False,
                   soft_wrap=unlimited)


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")


_FOLD = {"NAME", "JOB DIR", "KEY", "OWNER", "REMOTE DIR", "MESSAGE", "NOTE"}
"""Long columns: folded onto several lines in a narrow terminal, so short ones stay whole."""


def _table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in columns:
        if column in _FOLD:
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, no_wrap=True, min_width=len(column))
    return table


def jobs_table(records: Sequence[JobRecord], *, long: bool = False) -> Table:
    now = time.time()
    if long:
        table = _table("NAME", "SYSTEM", "STATUS", "REMOTE ID", "CREATED", "UPDATED", "KEY", "OWNER",
                       "REMOTE DIR", "MESSAGE")
    else:
        table = _table("NAME", "SYSTEM", "STATUS", "REMOTE ID", "AGE", "UPDATED", "JOB DIR")
    for r in records:
        status = f"[{_STYLE[r.status]}]{r.status.value}[/]"
        if long:
            remote_dir = f"{r.remote_root}/{r.job_dir}" if r.remote_root else "-"
            table.add_row(plain(r.name), plain(r.system), status, r.remote_id or "-", _when(r.created_at), _when(r.updated_at),
                          r.key, r.owner or "-", remote_dir, (r.message or "").replace("\n", " ")[:200])
        else:
            table.add_row(plain(r.name), plain(r.system), status, r.remote_id or "-", _ago(now - r.created_at),
                          _ago(now - r.updated_at) + " ago", r.job_dir)
    return table


def record_dict(record: JobRecord) -> dict[str, Any]:
    return {**record.__dict__, "status": record.status.value}


def status_table(records: Sequence[JobRecord], array_of: Callable[[JobRecord], str | None] | None = None) -> Table:
    """Jobs per system and state; with ``array_of`` (a job's array id, None for a job submitted
    alone), also how many job arrays the queued and running jobs belong to."""
    columns = ["SYSTEM", *(name.upper() for name, _ in _SUMMARY), "TOTAL"]
    table = _table(*columns, *(["ARRAYS"] if array_of is not None else []))
    by_system: dict[str, Counter[JobStatus]] = {}
    arrays: dict[str, set[str]] = {"all": set()}
    for r in records:
        by_system.setdefault(r.system, Counter())[r.status] += 1
        parent = array_of(r) if array_of is not None and r.status in (JobStatus.SUBMITTED, JobStatus.STARTED) else None
        if parent is not None:
            arrays.setdefault(r.system, set()).add(parent)
            arrays["all"].add(f"{r.system}:{parent}")
    totals: Counter[JobStatus] = Counter(r.status for r in records)
    for name, counts in [*sorted(by_system.items()), ("all", totals)]:
        extra = [str(len(arrays.get(name, ())))] if array_of is not None else []
        table.add_row(name, *(str(sum(counts[s] for s in group)) for _, group in _SUMMARY),
                      str(sum(counts.values())), *extra, style="bold" if name == "all" else None)
    table.caption = f"{datetime.now():%H:%M:%S}"
    return table


def report_table(report: Report) -> Table:
    table = _table("NAME", "SYSTEM", "REMOTE ID", "WAS", "NOW", "NOTE")
    for change in report.changes:
        r = change.record
        table.add_row(plain(r.name), plain(r.system), r.remote_id or "-", r.status.value,
                      f"[{_STYLE[change.status]}]{change.status.value}[/]", plain(change.message or ""))
    for r, note in report.unchanged:
        table.add_row(plain(r.name), plain(r.system), r.remote_id or "-", r.status.value, r.status.value, plain(note))
    return table
