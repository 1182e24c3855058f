"""Tables for the terminal (rich), plain aligned text when piped, JSON on request."""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..jobs.database import JobRecord, JobStatus
from ..jobs.escalation import Escalation
from ..jobs.route import RouteKind
from ..jobs.states import UNFINISHED
from ._actions import Report

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(value: str) -> Text:
    """``value`` shown as it is: never read as rich markup, control characters made visible."""
    return Text(_printable(value))


def _printable(value: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], value)

__all__ = ["console", "jobs_lines", "jobs_long", "record_dict", "report_table", "run_seconds", "short_remote_id",
           "status_table", "terminal_width", "totals_line"]

_STYLE = {JobStatus.SUCCEEDED: "green", JobStatus.FAILED: "red", JobStatus.DIED: "red",
          JobStatus.STARTED: "cyan", JobStatus.SUBMITTED: "blue", JobStatus.CREATED: "yellow",
          JobStatus.CANCELLED: "magenta", JobStatus.NOT_SUBMITTED: "yellow", JobStatus.RERUN: "yellow",
          JobStatus.PROCESSED: "dim green", JobStatus.CLEANED: "dim"}
_SUMMARY = (("created", (JobStatus.CREATED,)), ("queued", (JobStatus.SUBMITTED,)),
            ("running", (JobStatus.STARTED,)), ("done", (JobStatus.SUCCEEDED, JobStatus.PROCESSED)),
            ("failed", (JobStatus.FAILED,)), ("died", (JobStatus.DIED,)), ("cancelled", (JobStatus.CANCELLED,)),
            ("unsent", (JobStatus.NOT_SUBMITTED, JobStatus.RERUN)), ("cleaned", (JobStatus.CLEANED,)))
"""Columns of ``status``: queued means accepted by the scheduler, running means the worker started,
unsent means never submitted (the call stopped at a check) or marked for a rerun."""


def console(*, wide: bool = False) -> Console:
    """A console on click's current stdout, as wide as :func:`terminal_width` says (``wide``, or
    piped without ``$COLUMNS``: no limit, never truncated)."""
    stream = sys.stdout
    tty = stream.isatty()
    width = None if wide else terminal_width()
    return Console(file=stream, width=width or 100_000, no_color=not tty, highlight=False, soft_wrap=width is None)


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


@dataclass(frozen=True)
class _Column:
    title: str
    value: Callable[[JobRecord, float], str]
    keep: int
    """Which columns stay when the terminal is narrow: the lowest ``keep`` goes first."""


def short_remote_id(record: JobRecord) -> str:
    """The job's queue id, a packed chunk's (``pack:<pack id>:<job dir>``, ~60 characters) as its pack."""
    if not record.remote_id:
        return "-"
    if record.route is RouteKind.PACKED and record.pack_id:
        return f"pack:{record.pack_id[:8]}"
    return record.remote_id


def escalated(record: JobRecord, *, whole: bool = False) -> str:
    """What was done after its kills at its limits (docs/escalation.md): each step in words (``whole``),
    or in short (``split``, ``time 00:02:00``, ``mem 512 MB``); "" if nothing."""
    done = Escalation.from_json(record.escalation)
    return done.summary() if whole else done.short()


def run_seconds(record: JobRecord, now: float) -> float | None:
    """How long its worker ran (so far, while it runs); None if it never started."""
    if record.started_at is None:
        return None
    end = record.finished_at if record.finished_at is not None else (
        now if record.status is JobStatus.STARTED else record.updated_at)
    return max(0.0, end - record.started_at)


def _run(record: JobRecord, now: float) -> str:
    seconds = run_seconds(record, now)
    return "-" if seconds is None else _ago(seconds)


def where(record: JobRecord, *, short: bool = False) -> str:
    """The system a job runs (or ran) on; a moved chunk also names the one it was taken back from,
    and a move under way the system it is going to (docs/multi_system.md). ``short``, for a column
    of ``ls``: ``from→to``, so that one moved chunk does not widen SYSTEM enough to cut every name."""
    if short:
        if record.moved_to:
            return f"{record.system}→{record.moved_to} (moving)"
        return f"{record.moved_from}→{record.system}" if record.moved_from else record.system
    text = record.system
    if record.moved_from:
        text += f" (from {record.moved_from})"
    if record.moved_to:
        text += f" (moving to {record.moved_to})"
    return text


_COLUMNS = (
    _Column("NAME", lambda r, now: r.name, 9),
    _Column("STATUS", lambda r, now: r.status.value, 8),
    _Column("ID", lambda r, now: short_remote_id(r), 7),
    _Column("RUN", _run, 6),
    _Column("ESCALATED", lambda r, now: escalated(r) or "-", 3),
    _Column("SYSTEM", lambda r, now: where(r, short=True), 5),
    _Column("UPDATED", lambda r, now: _ago(now - r.updated_at) + " ago", 4),
    _Column("AGE", lambda r, now: _ago(now - r.created_at), 2),
    _Column("JOB DIR", lambda r, now: r.job_dir, 1),
)
_MIN_NAME = 16
"""NAME is shortened in its middle down to this width before columns are dropped, or to the width
that still tells the names apart if that is wider."""


def _middle(text: str, width: int) -> str:
    """``text`` cut in its middle to ``width`` characters (chunk numbers at the end stay visible)."""
    if len(text) <= width:
        return text
    tail = width // 2
    return f"{text[:width - tail - 1]}…{text[-tail:]}"


def _distinct_width(names: Sequence[str]) -> int:
    """The narrowest width (at least ``_MIN_NAME``) at which the names, shortened in their middle,
    are still told apart (``relax_array_chunk_0`` and ``relax_packed_chunk_0`` both cut to
    ``relax_a…_chunk_0`` would not be)."""
    longest = max(map(len, names), default=0)
    distinct = len(set(names))
    for width in range(_MIN_NAME, longest):
        if len({_middle(name, width) for name in names}) == distinct:
            return width
    return max(longest, _MIN_NAME)


def terminal_width() -> int | None:
    """Columns to fit: ``$COLUMNS`` if set, the terminal's width, or None (piped: no limit)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def jobs_lines(records: Sequence[JobRecord], width: int | None) -> list[str]:
    """The job list as aligned text fitting ``width`` (None: every column): columns are dropped,
    least useful first (JOB DIR, AGE, UPDATED, SYSTEM...), after NAME is shortened in its middle.
    ESCALATED is shown only when a job was escalated (docs/escalation.md)."""
    now = time.time()
    cells = {c.title: [_printable(c.value(r, now)) for r in records] for c in _COLUMNS}
    widths = {t: max([len(t), *map(len, values)]) for t, values in cells.items()}
    shown = [c for c in _COLUMNS if c.title != "ESCALATED" or any(v != "-" for v in cells[c.title])]

    def total() -> int:
        return sum(widths[c.title] for c in shown) + 2 * (len(shown) - 1)

    if width is not None:
        whole = widths["NAME"]
        least = min(_distinct_width(cells["NAME"]), whole)
        widths["NAME"] = max(min(whole, width - (total() - whole)), least)
        while total() > width and len(shown) > 2:
            shown.remove(min(shown, key=lambda c: c.keep))
            widths["NAME"] = max(min(whole, width - (total() - widths["NAME"])), least)
    lines = ["  ".join(c.title.ljust(widths[c.title]) for c in shown).rstrip()]
    for row in range(len(records)):
        lines.append("  ".join(_middle(cells[c.title][row], widths[c.title]).ljust(widths[c.title])
                               for c in shown).rstrip())
    return lines


def jobs_long(records: Sequence[JobRecord]) -> list[str]:
    """Every field of each job, one per line (``ls -l``): whole values, readable at any width."""
    now = time.time()
    lines: list[str] = []
    for r in records:
        run = run_seconds(r, now)
        fields = [("status", r.status.value), ("system", where(r)), ("remote id", r.remote_id or "-"),
                  ("key", r.key), ("job dir", r.job_dir),
                  ("remote dir", f"{r.remote_root}/{r.job_dir}" if r.remote_root else "-"),
                  ("created", _when(r.created_at)), ("updated", _when(r.updated_at)),
                  *((label, _when(stamp)) for label, stamp in (("submitted", r.submitted_at), ("started", r.started_at),
                                                                 ("finished", r.finished_at), ("fetched", r.fetched_at))
                    if stamp is not None),
                  ("run time", "-" if run is None else _ago(run)), ("where", r.worker or "-"),
                  *((("moved", r.move_reason or "-"),) if r.moved_from or r.moved_to else ()),
                  ("owner", r.owner or "-"), ("message", (r.message or "").replace("\n", " ") or "-"),
                  ("ended by", (r.end_cause or "-").replace("_", " ") if r.status is JobStatus.DIED else "-"),
                  ("escalated", escalated(r, whole=True) or "-")]
        lines.append(_printable(r.name))
        lines.extend(f"  {label + ':':<11} {_printable(value)}" for label, value in fields)
    return lines


def totals_line(records: Sequence[JobRecord], shown: int) -> str:
    """The footer: how many jobs (and how many shown), per status, and their run time added up."""
    now = time.time()
    counts = Counter(r.status.value for r in records)
    runs = [s for r in records if (s := run_seconds(r, now)) is not None]
    by_status = ", ".join(f"{n} {s}" for s, n in counts.most_common())
    head = f"{len(records)} job(s)" + (f" ({shown} shown: --limit)" if shown < len(records) else "")
    moved = sum(1 for r in records if r.moved_from)
    tail = f"; {moved} moved to another system" if moved else ""
    return f"{head}: {by_status}; run time {_ago(sum(runs))} in total{tail}" if records else "no jobs"


def wrapped(lines: Sequence[str], width: int | None) -> list[str]:
    """Sentences (the footer, predicted ends) folded at word boundaries to ``width`` (None: as they
    are), their continuation indented, so that no line wraps in the terminal mid-word."""
    if width is None:
        return list(lines)
    return [part for line in lines
            for part in textwrap.wrap(line, width=width, subsequent_indent="  ", break_on_hyphens=False) or [""]]


def call_of(record: JobRecord) -> str:
    """The call a chunk job belongs to (its name without ``_chunk_<i>``): the operation its times are kept under."""
    return re.sub(r"_chunk_\d+$", "", record.name)


def predicted_end_lines(records: Sequence[JobRecord],
                        measured: Mapping[tuple[str, str], Sequence[tuple[float, int]]]) -> list[str]:
    """One line per call with unfinished jobs: the time to its end predicted from its measured chunk times
    (unfinished chunks x mean chunk time, over the chunks running now). A self-tuned call plans its
    chunks as results come back: its chunks not planned yet are not counted."""
    calls: dict[tuple[str, str], list[JobRecord]] = {}
    for record in records:
        if record.status in UNFINISHED:
            calls.setdefault((call_of(record), record.system), []).append(record)
    lines = []
    for (call, system), unfinished in sorted(calls.items()):
        times = measured.get((call, system)) or ()
        if not times:
            lines.append(f"{system}: {call}: {len(unfinished)} unfinished job(s); no measured times yet")
            continue
        per_chunk = sum(s for s, _ in times) / len(times)
        running = sum(1 for r in unfinished if r.status is JobStatus.STARTED)
        left = len(unfinished) * per_chunk / max(1, running)
        lines.append(f"{system}: {call}: {len(unfinished)} unfinished job(s), about {_ago(left)} to the end "
                     f"(measured {per_chunk:.1f} s a chunk over {len(times)} chunk(s), {running} running)")
    return lines


def record_dict(record: JobRecord) -> dict[str, Any]:
    return {**record.__dict__, "status": record.status.value}


def status_table(records: Sequence[JobRecord], array_of: Callable[[JobRecord], str | None] | None = None,
                 width: int | None = None) -> Table:
    """Jobs per system and state; with ``array_of`` (a job's array id, None for a job submitted
    alone), also how many job arrays the queued and running jobs belong to. Narrower than every
    column needs (``width``), the states no job is in are left out."""
    present = {r.status for r in records}
    summary = list(_SUMMARY)
    full = sum(max(len(name), 4) + 3 for name, _ in summary) + 24
    if width is not None and full > width:
        summary = [(name, group) for name, group in summary if present & set(group)]
    columns = ["SYSTEM", *(name.upper() for name, _ in summary), "TOTAL", "ESCALATED"]
    # chunks each system took over from another (a call over several systems): shown only if any
    moved_in = Counter(r.system for r in records if r.moved_from)
    table = _table(*columns, *(["MOVED IN"] if moved_in else []), *(["ARRAYS"] if array_of is not None else []))
    by_system: dict[str, Counter[JobStatus]] = {}
    arrays: dict[str, set[str]] = {"all": set()}
    for r in records:
        by_system.setdefault(r.system, Counter())[r.status] += 1
        parent = array_of(r) if array_of is not None and r.status in (JobStatus.SUBMITTED, JobStatus.STARTED) else None
        if parent is not None:
            arrays.setdefault(r.system, set()).add(parent)
            arrays["all"].add(f"{r.system}:{parent}")
    totals: Counter[JobStatus] = Counter(r.status for r in records)
    escalations = Counter(r.system for r in records if escalated(r))
    for name, counts in [*sorted(by_system.items()), ("all", totals)]:
        extra = [str(len(arrays.get(name, ())))] if array_of is not None else []
        count = escalations.total() if name == "all" else escalations[name]
        moved = [str(moved_in.total() if name == "all" else moved_in[name])] if moved_in else []
        table.add_row(name, *(str(sum(counts[s] for s in group)) for _, group in summary),
                      str(sum(counts.values())), str(count), *moved, *extra, style="bold" if name == "all" else None)
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
