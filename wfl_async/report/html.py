"""The run report as one self-contained HTML file (opens offline: no request leaves the page).

Drawn with Bokeh, its JavaScript inlined (only the core bundle, about 1.3 MB: Plotly's inlined
plotly.js is about 4.5 MB, and Bokeh's ColumnDataSource draws thousands of bars from columnar
arrays, so a run of thousands of chunks stays quick to open). The numbers come from
:mod:`.numbers`; the tables are plain HTML with ``data-key`` attributes (a test reads them),
the plots Bokeh's.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from bokeh.embed import components
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, HoverTool, Range1d
from bokeh.plotting import figure
from bokeh.resources import Resources

from .numbers import JobSpan, RunReport

__all__ = ["render_html"]

_PHASES = (("staged", "created", "submitted", "#bbbbbb"), ("queued", "submitted", "started", "#f2b134"),
           ("running", "started", "finished", "#2b8cbe"), ("fetching", "finished", "fetched", "#7fbc41"))
"""Phase name, the span fields it runs between, its colour."""
_FAILED_COLOUR = "#d7301f"
_WIDTH = 1100
_NUMERIC = frozenset({"y", "left", "right", "seconds"})


def _ms(stamp: float) -> float:
    return stamp * 1000.0  # Bokeh's datetime axis counts milliseconds


def _timeline(spans: Sequence[JobSpan], title: str, row_of: dict[int, int], labels: dict[int, str],
              phases: Sequence[str] = ("staged", "queued", "running", "fetching")) -> figure:
    """One bar per phase of each job, on the row ``row_of`` gives it (span index -> row)."""
    columns: dict[str, list[object]] = {k: [] for k in ("y", "left", "right", "colour", "phase", "name", "where",
                                                         "status", "seconds")}
    for index, span in enumerate(spans):
        for phase, start_field, end_field, colour in _PHASES:
            if phase not in phases:
                continue
            start, end = getattr(span, start_field), getattr(span, end_field)
            if start is None:
                continue
            if end is None:  # still in this phase, or the run stopped in it
                end = span.end
            if end <= start:
                continue
            failed = phase == "running" and span.status in ("failed", "died", "cancelled")
            for key, value in (("y", row_of[index]), ("left", _ms(start)), ("right", _ms(end)),
                               ("colour", _FAILED_COLOUR if failed else colour), ("phase", phase),
                               ("name", span.name), ("where", f"{span.system} {span.worker}"),
                               ("status", span.status), ("seconds", round(end - start, 1))):
                columns[key].append(value)
    rows = max(row_of.values(), default=0) + 1
    plot = figure(title=title, x_axis_type="datetime", width=_WIDTH, height=min(900, 120 + 6 * rows),
                  y_range=Range1d(start=rows, end=-1), tools="xpan,xwheel_zoom,box_zoom,reset,save", output_backend="canvas")
    # numbers as numpy arrays: Bokeh sends them base64-encoded, not as JSON text (a smaller page)
    data = {k: (np.asarray(v, dtype=float) if k in _NUMERIC else v) for k, v in columns.items()}
    plot.hbar(y="y", left="left", right="right", height=0.8, color="colour", source=ColumnDataSource(data))
    plot.add_tools(HoverTool(tooltips=[("job", "@name"), ("where", "@where"), ("phase", "@phase"),
                                       ("seconds", "@seconds"), ("status", "@status")]))
    plot.yaxis.major_label_overrides = {float(row): label for row, label in labels.items()}
    plot.yaxis.ticker = sorted(labels)
    return plot


def _by_chunk(report: RunReport) -> figure:
    order = sorted(range(len(report.spans)), key=lambda i: (report.spans[i].system, report.spans[i].worker,
                                                            report.spans[i].submitted or report.spans[i].created))
    row_of = {index: row for row, index in enumerate(order)}
    labels: dict[int, str] = {}
    for row, index in enumerate(order):
        span = report.spans[index]
        key = f"{span.system} {span.worker}"
        if not labels or list(labels.values())[-1] != key:
            labels[row] = key
    return _timeline(report.spans, "Every job: staged (grey), queued (amber), running (blue; red if it failed), "
                                   "fetching (green); grouped by system and worker", row_of, labels)


def _by_worker(report: RunReport) -> figure:
    workers = sorted({(s.system, s.worker) for s in report.spans})
    index_of = {w: i for i, w in enumerate(workers)}
    row_of = {i: index_of[(s.system, s.worker)] for i, s in enumerate(report.spans)}
    labels = {i: f"{system} {worker}" for (system, worker), i in index_of.items()}
    return _timeline(report.spans, "Per worker (or host): the jobs it ran (blue; red: failed) and when it sat idle",
                     row_of, labels, phases=("running",))


def _wait_against_run(report: RunReport) -> figure:
    done = [s for s in report.spans if s.queue_wait is not None and s.finished is not None]
    source = ColumnDataSource({"wait": [s.queue_wait for s in done], "run": [s.run_time for s in done],
                               "name": [s.name for s in done], "system": [s.system for s in done],
                               "colour": [_FAILED_COLOUR if s.status in ("failed", "died", "cancelled") else "#2b8cbe"
                                          for s in done]})
    plot = figure(title="Queue wait against run time (s), one point per job", width=_WIDTH // 2, height=360,
                  x_axis_label="queue wait (s)", y_axis_label="run time (s)", tools="box_zoom,reset,save")
    plot.scatter("wait", "run", source=source, color="colour", size=6, alpha=0.7)
    plot.add_tools(HoverTool(tooltips=[("job", "@name"), ("system", "@system"), ("wait", "@wait"), ("run", "@run")]))
    return plot


def _running_over_time(report: RunReport) -> figure:
    """How many jobs ran at each moment: the idle tail is where this falls off."""
    events: list[tuple[float, int]] = []
    for span in report.spans:
        if span.started is not None:
            events += [(span.started, 1), (span.finished if span.finished is not None else span.end, -1)]
    events.sort(key=lambda e: (e[0], -e[1]))  # a start before an end at the same (whole) second
    xs, ys, level = [], [], 0
    for stamp, change in events:
        level += change
        xs.append(_ms(stamp))
        ys.append(level)
    plot = figure(title="Jobs running at once", x_axis_type="datetime", width=_WIDTH // 2, height=360,
                  tools="xpan,xwheel_zoom,box_zoom,reset,save")
    plot.step(xs, ys, mode="after", line_width=2)
    return plot


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], key: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<h2>{html.escape(title)}</h2><table data-key="{key}"><tr>{head}</tr>{body}</table>'


def _figures_table(report: RunReport) -> str:
    ch = report.core_hours
    figures = [("jobs", report.jobs), ("in progress", "yes" if report.in_progress else "no"),
               ("wall (s)", f"{report.wall_seconds:.1f}"),
               ("queue wait median / max (s)", f"{report.queue_wait.median:.1f} / {report.queue_wait.max:.1f}"),
               ("run time median / max (s)", f"{report.run_time.median:.1f} / {report.run_time.max:.1f}"),
               ("fetch median / max (s)", f"{report.fetch_time.median:.1f} / {report.fetch_time.max:.1f}"),
               ("core-hours requested", f"{ch.requested:.4f}"), ("core-hours held", f"{ch.held:.4f}"),
               ("core-hours used", f"{ch.used:.4f}"), ("core-hours wasted: failed", f"{ch.wasted_failed:.4f}"),
               ("core-hours wasted: killed or cancelled", f"{ch.wasted_killed:.4f}"),
               ("core-hours wasted: idle packed workers", f"{ch.wasted_idle:.4f}"),
               *((f"idle tail on {system} (s)", f"{tail:.1f}") for system, tail in report.idle_tail_seconds.items())]
    rows = "".join(f'<tr><th>{html.escape(k)}</th><td data-key="{html.escape(k)}">{html.escape(str(v))}</td></tr>'
                   for k, v in figures)
    statuses = "".join(f'<tr><th>{html.escape(s)}</th><td data-status="{html.escape(s)}">{n}</td></tr>'
                       for s, n in sorted(report.by_status.items()))
    return (f'<h2>Figures</h2><table data-key="figures">{rows}</table>'
            f'<h2>Jobs by status</h2><table data-key="statuses">{statuses}</table>')


def render_html(report: RunReport, title: str) -> str:
    """The whole page: tables of figures, the plots, the failures and what the commands cost."""
    plots = column(_by_chunk(report), _by_worker(report), _wait_against_run(report), _running_over_time(report)) \
        if report.spans else None
    script, div = components(plots) if plots is not None else ("", "<p>No jobs.</p>")
    resources = Resources(mode="inline", components=["bokeh"])
    workers = _table("Workers", ["system", "worker", "packed", "chunks", "busy (s)", "span (s)", "utilisation"],
                     [(w.system, w.worker, "yes" if w.packed else "no", w.chunks, f"{w.busy_seconds:.1f}",
                       f"{w.span_seconds:.1f}", "-" if w.utilisation is None else f"{w.utilisation:.0%}") for w in report.workers], "workers")
    failures = _table("Failures by cause", ["status", "jobs", "cause", "example job", "example message"],
                      [(f.status, f.count, f.cause, f.example_job, f.example_message) for f in report.failures],
                      "failures")
    cost_rows = [(f"system {name}", k, v) for name, stats in report.costs["systems"].items() for k, v in stats.items()]
    cost_rows += [(f"commands on {host}", k, v) for host, stats in report.costs["transports"].items()
                  for k, v in stats.items()]
    costs = _table(f"What the run cost ({report.costs['sessions']} session(s))", ["where", "what", "count"],
                   cost_rows, "costs")
    when = datetime.fromtimestamp(report.generated_at).isoformat(sep=" ", timespec="seconds")
    numbers = html.escape(json.dumps(report.to_dict(with_jobs=False)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em 2em}} table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:90%}}</style>
{resources.render_js()}
</head><body>
<h1>{html.escape(title)}</h1><p>Made {when} by wfl-async report{' while the run was in progress' if report.in_progress
                                                                  else ''}.</p>
{_figures_table(report)}
{failures}
{div}
{workers}
{costs}
<script type="application/json" id="wfl-async-report-numbers">{numbers}</script>
{script}
</body></html>
"""
