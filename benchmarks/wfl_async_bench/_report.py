"""The benchmark report as a Markdown table (pasteable into docs) and ratio lines."""

from __future__ import annotations

from ._figures import RunFigures
from ._harness import BenchmarkReport

__all__ = ["format_report"]

_COLUMNS = ("implementation", "system", "jobs", "submit all (s)", "first result (s)", "all results (s)", "jobs/s",
            "ssh connections", "remote commands", "scheduler calls", "polls", "commands per poll (max / mean)",
            "peak RSS (MB)")


def _num(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _row(run: RunFigures) -> list[str]:
    per_poll = "-"
    if run.per_poll is not None and run.per_poll.intervals:
        per_poll = f"{run.per_poll.max_commands_after_submit} / {run.per_poll.mean_commands:.2f}"
    rss = run.peak_rss_bytes / 2**20 if run.peak_rss_bytes is not None else None
    failed = f" ({run.failed} failed)" if run.failed else ""
    return [run.implementation, run.system, f"{run.jobs}{failed}", _num(run.submit_all_s), _num(run.first_result_s),
            _num(run.all_results_s), _num(run.jobs_per_s, 1), _num(run.ssh_connections), _num(run.remote_commands),
            _num(run.scheduler_calls), _num(run.polls), per_poll, _num(rss, 0)]


def format_report(report: BenchmarkReport) -> str:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in
                                                               range(len(_COLUMNS))) + "|"]
    lines += ["| " + " | ".join(_row(run)) + " |" for run in report.runs]
    lines.append("")
    lines.append("commands per poll: max over poll intervals starting after every job was submitted / mean over "
                 "all intervals (a status command, plus a fetch when jobs finished)")
    for ratio in report.ratios:
        value = f"{ratio['ratio']:.2f}x" if ratio["ratio"] is not None else "n/a"
        lines.append(f"ratio {ratio['system']} N={ratio['jobs']}: {ratio['what']} = {value}")
    for run in report.runs:
        lag = run.extra.get("result_lag")
        if lag and lag["median_s"] is not None:
            lines.append(f"result lag [{run.implementation}, {run.system}, N={run.jobs}], from each job's final marker "
                         f"on the cluster: to the end of the poll that found it median {_num(lag['seen_median_s'])} s, "
                         f"max {_num(lag['seen_max_s'])} s ({lag['missed']} jobs not taken by the first poll after "
                         f"their marker, {lag['finished_unwatched']} finished before the driver had their queue id); "
                         f"to its result in the driver median {lag['median_s']:.2f} s, max "
                         f"{lag['max_s']:.2f} s. Poll interval {lag['poll_interval_s']:.2f} s, polls started every "
                         f"{_num(lag['poll_gap_median_s'])} s (max {_num(lag['poll_gap_max_s'])}), longest poll "
                         f"{_num(lag['longest_poll_s'])} s, longest fetch {_num(lag['longest_fetch_s'])} s")
    for run in report.runs:
        for note in run.notes:
            lines.append(f"note [{run.implementation}, {run.system}, N={run.jobs}]: {note}")
        if run.extra.get("rsync_processes") is not None:
            lines.append(f"note [{run.implementation}, {run.system}, N={run.jobs}]: ssh processes "
                         f"{run.extra['ssh_processes']}, rsync processes {run.extra['rsync_processes']}")
    return "\n".join(lines)
