"""The autoparallelize benchmark's report: two Markdown tables and the summary against the targets."""

from __future__ import annotations

from typing import Any

from ._autopara_figures import AutoparaReport, AutoparaRun, Rerun
from ._report import _num

__all__ = ["format_autopara_report"]

_RUN_COLUMNS = ("implementation", "in-job processes", "configs / chunks", "first written (s)", "first / end to end",
                "end to end (s)", "ok", "submissions", "ssh connections", "remote commands", "scheduler calls",
                "polls", "commands per poll (max / mean)")
_RERUN_COLUMNS = ("implementation", "in-job processes", "rerun", "time (s)", "submissions", "ssh connections",
                  "remote commands", "configs in output")


def _setting(setting: str) -> str:
    return "default (cores per node)" if setting == "default" else setting


def _run_row(run: AutoparaRun) -> list[str]:
    per_poll = f"{run.commands_per_poll[0]} / {run.commands_per_poll[1]:.2f}" if run.commands_per_poll else "-"
    fraction = f"{run.first_fraction:.1%}" if run.first_fraction is not None else "-"
    return [run.implementation, _setting(run.setting), f"{run.configs} / {run.chunks}", _num(run.first_written_s),
            fraction, _num(run.end_to_end_s), str(run.ok), _num(run.submissions), _num(run.ssh_connections),
            _num(run.remote_commands), _num(run.scheduler_calls), _num(run.polls), per_poll]


def _rerun_row(rerun: Rerun) -> list[str]:
    return [rerun.implementation, _setting(rerun.setting), rerun.kind, _num(rerun.seconds, 3),
            _num(rerun.submissions), _num(rerun.ssh_connections), _num(rerun.remote_commands), str(rerun.ok)]


def _table(columns: tuple[str, ...], rows: list[list[str]], left: int) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(columns))) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_autopara_report(report: AutoparaReport) -> str:
    lines = _table(_RUN_COLUMNS, [_run_row(r) for r in report.runs], 2)
    lines.append("")
    lines += _table(_RERUN_COLUMNS, [_rerun_row(r) for r in report.reruns], 3)
    lines.append("")
    for entry in report.summary:
        lines.append(f"summary, WFL_NUM_PYTHON_SUBPROCESSES={entry['setting']}:")
        for key, value in entry.items():
            if key in ("setting", "targets"):
                continue
            lines.append(f"  {key}: {_value(value)}")
        for target, met in entry["targets"].items():
            verdict = "n/a" if met is None else "met" if met else "MISSED"
            lines.append(f"  target {target}: {verdict}")
    sums = {round(r.energy_sum, 6) for r in report.runs if r.energy_sum is not None and r.ok == r.configs}
    if sums:
        lines.append(f"output energy sums of complete runs: {'identical' if len(sums) == 1 else 'DIFFER'} "
                     f"({', '.join(f'{s:.6f}' for s in sorted(sums))})")
    for run in report.runs:
        for note in run.notes:
            lines.append(f"note [{run.implementation}, {run.setting}]: {note}")
        if run.extra.get("rsync_processes") is not None:
            lines.append(f"note [{run.implementation}, {run.setting}]: rsync processes {run.extra['rsync_processes']}")
    for rerun in report.reruns:
        for note in rerun.notes:
            lines.append(f"note [{rerun.implementation}, {rerun.setting}, {rerun.kind}]: {note}")
    return "\n".join(lines)
