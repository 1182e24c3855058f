"""``wfl-async report``: where a run's time and core-hours went, as one offline HTML page or JSON.

Reads the jobs database only (read-only, WAL): works while the run is still in progress.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import click

from ..jobs.database import JobsDatabase
from ..report import RunReport, build_report, select_runs
from ._common import JobFilter, Project, run_async

__all__ = ["load_report", "report"]


async def _load(project: Project, names: Sequence[str], filters: JobFilter) -> RunReport:
    async with JobsDatabase(project.db_path, readonly=True) as db:
        records = select_runs(await filters.select(db), names)
        costs = await db.costs(r.owner for r in records if r.owner)
    return build_report(records, costs, time.time())


def load_report(project: Project, names: Sequence[str] = (), filters: JobFilter | None = None) -> RunReport:
    """The report of the named calls or jobs (all jobs if none) from the project's database."""
    return run_async(_load, project, names, filters or JobFilter())


@click.command()
@click.argument("names", nargs=-1, metavar="[CALL or JOB NAME]...")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True, help="The HTML file to write (self-contained: opens offline).")
@click.option("--json", "as_json", is_flag=True, help="Print the same numbers as JSON instead (for scripts).")
@click.option("--no-jobs", is_flag=True, help="With --json, leave out the per-job rows.")
@click.option("-S", "--system", default=None, metavar="REGEX[,REGEX]",
              help="Only jobs on a system whose whole name matches one of these regular expressions.")
def report(names: tuple[str, ...], output: Path, as_json: bool, no_jobs: bool, system: str | None) -> None:
    """Where the time and core-hours of a run went: a timeline of every job (queued, running,
    fetching) by system and worker, queue wait against run time, packed workers' use and idle
    tail, core-hours requested, used and wasted, failures by cause, and the commands it cost.

    NAME is a call's job name (its chunks NAME_chunk_N are included) or a job's name; none: every job.
    Works on a run still in progress (it is measured up to now).
    """
    project = Project.load()
    if not project.has_db():
        raise click.ClickException(project.no_db_message())
    found = load_report(project, names, JobFilter(system=system))
    if not found.jobs:
        raise click.ClickException(f"no jobs named {' '.join(names) or '(any)'} in {project.db_path}; "
                                   f"'wfl-async ls -a' lists the names")
    if as_json:
        click.echo(json.dumps(found.to_dict(with_jobs=not no_jobs), indent=1))
        return
    from ..report.html import render_html  # Bokeh only when drawing

    title = f"wfl-async report: {' '.join(names) or 'every job'}"
    output.write_text(render_html(found, title), encoding="utf-8")
    click.echo(f"{output}: {found.jobs} job(s); open it in a browser (it needs no network)")
