"""``python -m benchmarks.wfl_async_bench``: N trivial jobs per system, against the floor and wfl + ExPyRe.

``python -m benchmarks.wfl_async_bench autopara ...``: the autoparallelize workload (EMT in queued chunks).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from ._harness import BenchmarkOptions, run_benchmark
from ._report import format_report


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of job counts") from None
    if not values or min(values) < 1:
        raise click.BadParameter("job counts must be positive")
    return values


@click.command()
@click.option("--systems", default="slurm_ssh", show_default=True,
              help="Comma-separated system names from your config.json.")
@click.option("--jobs", "jobs", default="200", show_default=True,
              help="Jobs per run; several comma-separated sizes (e.g. 50,200) show commands per poll do not grow.")
@click.option("--check-interval", default=0.5, show_default=True, type=float,
              help="wfl_async's check_interval (s): the poll period.")
@click.option("--floor/--no-floor", default=True, show_default=True,
              help="Also submit the same job scripts with a plain loop on the cluster side.")
@click.option("--compare-expyre/--no-compare-expyre", default=True, show_default=True,
              help="Also run the same calls through wfl + ExPyRe (when installed).")
@click.option("--expyre-jobs", type=int, default=None, help="Jobs for ExPyRe [default: the largest --jobs].")
@click.option("--expyre-modes", default="plain,cm", show_default=True,
              help="plain: one ssh per command; cm: ssh ControlMaster connection sharing.")
@click.option("--expyre-check-interval", default=1.0, show_default=True, type=float,
              help="ExPyRe get_results check_interval (s); its default is 30.")
@click.option("--scale-expyre", is_flag=True, help="Compare a smaller ExPyRe run by scaling its time linearly.")
@click.option("--max-time", default="5m", show_default=True, help="Job max_time resource.")
@click.option("--timeout", default=900.0, show_default=True, type=float, help="Give up a run after this many s.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1),
              help="Runs of wfl_async + floor per job count (for a shared, noisy machine).")
@click.option("--keep", is_flag=True, help="Keep local and remote job directories.")
@click.option("--tracemalloc", "trace_memory", is_flag=True,
              help="Also report the peak of Python allocations (slows the driver).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every figure to this JSON file.")
def main(systems: str, jobs: str, check_interval: float, floor: bool, compare_expyre: bool, expyre_jobs: int | None,
         expyre_modes: str, expyre_check_interval: float, scale_expyre: bool, max_time: str, timeout: float,
         repeat: int, keep: bool, trace_memory: bool, json_out: Path | None) -> None:
    """Submit N trivial jobs (operator.add) to each system and report what it cost.

    Per system: time to submit all, to the first and to all results, jobs/s, ssh connections,
    remote commands, scheduler calls, polls, commands per poll interval and peak memory; the
    same job scripts submitted by a plain loop on the cluster side (the floor); and the same
    calls through wfl + ExPyRe over plain ssh and with ssh ControlMaster, with ratios.
    """
    modes = [m.strip() for m in expyre_modes.split(",") if m.strip()]
    unknown = set(modes) - {"plain", "cm"}
    if unknown:
        raise click.BadParameter(f"unknown modes {sorted(unknown)}; use plain and/or cm", param_hint="--expyre-modes")
    options = BenchmarkOptions(
        systems=[s.strip() for s in systems.split(",") if s.strip()], jobs=_ints(jobs), check_interval=check_interval,
        floor=floor, compare_expyre=compare_expyre, expyre_jobs=expyre_jobs, expyre_modes=modes,
        expyre_check_interval=expyre_check_interval, scale_expyre=scale_expyre,
        resources={"num_nodes": 1, "max_time": max_time}, timeout=timeout, repeat=repeat, keep=keep,
        trace_memory=trace_memory)
    report = anyio.run(run_benchmark, options)
    report.command = "python -m benchmarks.wfl_async_bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    _emit(format_report(report), report.as_dict(), json_out)


@click.command()
@click.option("--system", default="slurm_ssh", show_default=True, help="System name from your config.json.")
@click.option("--configs", default=2000, show_default=True, type=click.IntRange(1),
              help="EMT configurations (8-atom Cu cells).")
@click.option("--per-job", default=10, show_default=True, type=click.IntRange(1),
              help="num_inputs_per_queued_job: configurations per queued job.")
@click.option("--subprocesses", default="0", show_default=True,
              help="WFL_NUM_PYTHON_SUBPROCESSES inside each job, for every implementation; comma-separated "
                   "values run the whole comparison once each; 'default' sets nothing (cores per node).")
@click.option("--check-interval", default=0.5, show_default=True, type=float, help="wfl_async's check_interval (s).")
@click.option("--floor/--no-floor", default=True, show_default=True,
              help="Also submit the same chunk jobs with a plain loop on the cluster side.")
@click.option("--compare-expyre/--no-compare-expyre", default=True, show_default=True,
              help="Also run the workload through wfl 0.3.5 + ExPyRe (when installed).")
@click.option("--expyre-modes", default="plain,cm", show_default=True,
              help="plain: one ssh per command; cm: ssh ControlMaster connection sharing.")
@click.option("--expyre-check-interval", default=1.0, show_default=True, type=float,
              help="wfl's RemoteInfo check_interval (s) for ExPyRe; its default is 30.")
@click.option("--max-time", default="10m", show_default=True, help="Job max_time resource.")
@click.option("--timeout", default=1800.0, show_default=True, type=float, help="Give up waiting after this many s.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1),
              help="Runs of wfl_async + floor + reruns per setting (for a shared, noisy machine).")
@click.option("--keep", is_flag=True, help="Keep local and remote job directories.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every figure to this JSON file.")
def autopara_main(system: str, configs: int, per_job: int, subprocesses: str, check_interval: float, floor: bool,
                  compare_expyre: bool, expyre_modes: str, expyre_check_interval: float, max_time: str,
                  timeout: float, repeat: int, keep: bool, json_out: Path | None) -> None:
    """EMT on many configurations as queued chunks: wfl_async against the floor and wfl + ExPyRe.

    Reports time to the first written result (and its fraction of end to end), end to end, the
    rerun with the output present and the rerun after deleting it (WFL_EXPYRE_NO_MARK_PROCESSED=1
    for both runs: it re-attaches to the finished jobs), submissions, ssh connections and remote
    commands; the same chunk jobs submitted by a plain loop on the cluster side (the floor); and
    wfl + ExPyRe on the same configurations, with ratios and the targets met or missed.
    """
    from ._autopara import AutoparaOptions, run_autopara_benchmark
    from ._autopara_report import format_autopara_report

    settings = [s.strip() for s in subprocesses.split(",") if s.strip()]
    for setting in settings:
        if setting != "default" and not setting.isdigit():
            raise click.BadParameter(f"{setting!r}: use a number of processes or 'default'",
                                     param_hint="--subprocesses")
    modes = [m.strip() for m in expyre_modes.split(",") if m.strip()]
    if set(modes) - {"plain", "cm"}:
        raise click.BadParameter("use plain and/or cm", param_hint="--expyre-modes")
    options = AutoparaOptions(system=system, configs=configs, per_job=per_job, settings=settings,
                              check_interval=check_interval, floor=floor, compare_expyre=compare_expyre,
                              expyre_modes=modes, expyre_check_interval=expyre_check_interval,
                              resources={"num_nodes": 1, "max_time": max_time}, timeout=timeout, repeat=repeat,
                              keep=keep)
    report = anyio.run(run_autopara_benchmark, options)
    report.command = "python -m benchmarks.wfl_async_bench autopara " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    _emit(format_autopara_report(report), report.as_dict(), json_out)


def entry() -> None:
    """``python -m benchmarks.wfl_async_bench [autopara] ...``."""
    if len(sys.argv) > 1 and sys.argv[1] == "autopara":
        del sys.argv[1]
        autopara_main(prog_name="python -m benchmarks.wfl_async_bench autopara")
    else:
        main()


def with_defaults(argv: list[str], defaults: list[str]) -> list[str]:
    """``argv`` with each ``--flag value`` pair of ``defaults`` added unless the flag is given.

    For the scripts in ``benchmarks/``: their acceptance configuration, overridable.
    """
    given = {arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("--")}
    added: list[str] = []
    for flag, value in zip(defaults[::2], defaults[1::2], strict=True):
        if flag not in given:
            added += [flag, value]
    return [argv[0], *added, *argv[1:]]


def _emit(text: str, figures: dict[str, Any], json_out: Path | None) -> None:
    """Print the report, and write its figures as JSON if asked."""
    click.echo(text)
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2))
        click.echo(f"figures written to {json_out}")


if __name__ == "__main__":  # last: everything above must be defined before it runs
    entry()
