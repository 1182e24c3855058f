"""``wfl-async bench``: N trivial jobs on each chosen system, and what they cost."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any

import click

from ..bench import BenchResult, bench_system, fresh_root, merged_raw_config
from ..session import session_scope

__all__ = ["bench"]

_COLUMNS = ("SYSTEM", "JOBS", "OK", "SUBMIT S", "FIRST S", "LAST S", "JOBS/S", "SSH", "COMMANDS", "POLLS",
            "CMDS/POLL MAX", "CMDS/POLL MEAN", "SCHED/POLL", "PEAK MB")


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(r: BenchResult) -> list[str]:
    poll = r.per_poll
    return [r.system, str(r.jobs), str(r.ok), _num(r.submit_all_s), _num(r.first_result_s), _num(r.all_results_s),
            _num(r.jobs_per_s, 1), str(r.ssh_connections), str(r.remote_commands), str(r.polls),
            str(poll.max_commands_after_submit) if poll else "-", _num(poll.mean_commands if poll else None),
            _num(r.scheduler_commands_per_poll), _num(r.peak_rss_bytes / 2**20 if r.peak_rss_bytes else None, 0)]


def format_table(results: Sequence[BenchResult]) -> str:
    """Aligned plain text: one row per system."""
    rows = [list(_COLUMNS), *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


async def _bench_all(systems: Sequence[str], jobs: int, check_interval: float, max_time: str,
                     keep: bool) -> list[BenchResult]:
    results: list[BenchResult] = []
    with fresh_root("wfl_async_bench_", merged_raw_config(), keep=keep):
        for name in systems:
            async with session_scope() as session:  # a session per system: its connections counted alone
                click.echo(f"[bench] {name}: {jobs} jobs", err=True)
                run = await bench_system(session, name, jobs, check_interval=check_interval,
                                         resources={"num_nodes": 1, "max_time": max_time})
                if not keep:
                    await session.system(name).transport.run(f"rm -rf {shlex.quote(run.remote_root)}",
                                                             check=False)
                results.append(run.result)
    return results


@click.command()
@click.argument("systems", nargs=-1, metavar="[SYSTEM]...")
@click.option("-N", "--jobs", default=20, show_default=True, type=click.IntRange(1), help="Jobs per system.")
@click.option("--check-interval", default=0.5, show_default=True, type=click.FloatRange(min=0.2),
              help="The jobs' check_interval (s): the poll period.")
@click.option("--max-time", default="5m", show_default=True, help="Each job's max_time resource.")
@click.option("--keep", is_flag=True, help="Keep the temporary project and the remote job directories.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of a table.")
def bench(systems: tuple[str, ...], jobs: int, check_interval: float, max_time: str, keep: bool,
          as_json: bool) -> None:
    """Run N trivial jobs at once on each SYSTEM (default: local) and report what they cost.

    Per system: seconds to submit all, to the first and the last result, jobs/s, ssh
    connections, remote commands, polls, remote commands per poll interval (max after all
    were submitted, and mean), scheduler commands per poll and peak memory of this process.
    The jobs run in a temporary project (nothing is added to this directory's jobs database);
    the first submission includes the system check of 'wfl-async doctor'.
    """
    from ._common import run_async

    results = run_async(_bench_all, list(systems) or ["local"], jobs, check_interval, max_time, keep)
    if as_json:
        payload: list[dict[str, Any]] = [r.as_dict() for r in results]
        click.echo(json.dumps(payload, indent=1))
    else:
        click.echo(format_table(results))
    if any(r.failed or r.ok != r.jobs for r in results):
        for r in results:
            for error in r.errors:
                click.echo(f"error: {r.system}: {error}", err=True)
        raise click.exceptions.Exit(1)
