"""``wfl-async report``: where a run's time and core-hours went (:mod:`.numbers`), drawn as one
offline HTML page (:mod:`.html`, which imports Bokeh: import it only to draw)."""

from .numbers import RunReport, build_report, select_runs, summary_lines

__all__ = ["RunReport", "build_report", "select_runs", "summary_lines"]
