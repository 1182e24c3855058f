"""``python -m wfl_async.benchmark``: N trivial jobs per system, against the floor and wfl + ExPyRe."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

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
    report.command = "python -m wfl_async.benchmark " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    click.echo(format_report(report))
    if json_out is not None:
        json_out.write_text(json.dumps(report.as_dict(), indent=2))
        click.echo(f"figures written to {json_out}")


if __name__ == "__main__":
    main()
