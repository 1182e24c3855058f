"""``wfl-async ls``, ``log`` and ``rerun``: look at jobs one by one, and ask for some to run again."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence

import anyio
import click

from ..errors import TransportError
from ..jobs import layout
from ..jobs.database import JobRecord, JobsDatabase
from ..jobs.fetched import FetchedStore
from ..jobs.states import RERUNNABLE, UNFINISHED, JobStatus
from ..report import select_runs
from ..session import session_scope
from ._common import JobFilter, Project, job_filters, read_jobs, run_async
from ._display import (
    call_of,
    escalated,
    jobs_lines,
    jobs_long,
    predicted_end_lines,
    record_dict,
    terminal_width,
    totals_line,
    wrapped,
)

__all__ = ["log", "ls", "rerun"]


@click.command("ls")
@job_filters
@click.option("-l", "--long", "--long-output", "long_", is_flag=True,
              help="Every field of each job, whole (times, key, owner, remote directory, message).")
@click.option("--json", "as_json", is_flag=True, help="One JSON list of jobs, for scripts.")
@click.option("-a", "--active", is_flag=True, help="Only jobs still being submitted, queued or running.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Only the N newest jobs.")
def ls(filters: JobFilter, long_: bool, as_json: bool, active: bool, limit: int | None) -> None:
    """List jobs, fitted to the terminal's width (read-only; safe while workflows run). Alias: list.

    Columns are dropped as the terminal narrows (JOB DIR, AGE, UPDATED, SYSTEM first) and long
    names are shortened in the middle; -l and --json show every value whole. ID is the
    scheduler's id (an array task's is ARRAY_TASK; a packed chunk's is its pack), RUN how long
    its worker ran. The last line adds them up.
    """
    project = Project.load()
    if active:
        filters = dataclasses.replace(filters, statuses=tuple(s for s in filters.statuses if s in UNFINISHED)
                                      or UNFINISHED)
    every = run_async(read_jobs, project, filters)
    records = every[-limit:] if limit else every
    if as_json:
        click.echo(json.dumps([record_dict(r) for r in records], indent=1))
        return
    if not project.has_db():
        click.echo(project.no_db_message(), err=True)
        return
    if not records:
        click.echo(f"no {'active ' if active else ''}jobs match ({filters.describe()})", err=True)
        return
    width = terminal_width()
    lines = jobs_long(records) if long_ else jobs_lines(records, width)
    ends = predicted_end_lines(every, run_async(_measured_times, project, every))
    click.echo("\n".join([*lines, *wrapped([totals_line(every, len(records)), *ends], width)]))


async def _measured_times(project: Project, records: Sequence[JobRecord]) -> dict[tuple[str, str], list[tuple[float, int]]]:
    """The measured chunk times of every call with unfinished jobs among ``records`` (read-only)."""
    calls = {(call_of(r), r.system) for r in records if r.status in UNFINISHED}
    if not calls:
        return {}
    async with JobsDatabase(project.db_path, readonly=True) as db:
        return {call: await db.measured_times(*call) for call in calls}


def _one_job(project: Project, job: str) -> JobRecord:
    """The job called ``job`` (its name, the start of its key, or its job directory); the newest if several."""
    records = run_async(read_jobs, project, JobFilter())
    found = [r for r in records if job in (r.name, r.job_dir) or r.key.startswith(job)]
    if not found:
        raise click.ClickException(f"no job named {job!r} (nor a key or job directory starting so) in "
                                   f"{project.db_path}; 'wfl-async ls' lists them")
    return found[-1]


async def _fetch_log(record: JobRecord, stage_root: str) -> str | None:
    """Bring the job's worker log back from its system (one command); the reason if it cannot."""
    if not record.remote_root:
        return "it was never submitted"
    try:
        async with session_scope() as session:
            await session.system(record.system).transport.download(
                record.remote_root, [f"{record.job_dir}/{layout.WORKER_LOG}"], session.stage_root)
    except TransportError as exc:
        return f"fetching it failed: {str(exc).splitlines()[0]}"
    return None


@click.command()
@click.argument("job")
@click.option("--lines", type=click.IntRange(min=0), default=100, show_default=True, metavar="N",
              help="Show the last N lines of the worker log (0: all).")
@click.option("--no-fetch", is_flag=True, help="Show the local copy only; never ask the job's system.")
def log(job: str, lines: int, no_fetch: bool) -> None:
    """A job's state, its error, and its worker log (the function's output and traceback).

    JOB is its name, the start of its key, or its job directory. The log of a job still
    running, or not fetched yet, is brought from its system first (one command).
    """
    project = Project.load()
    if not project.has_db():
        raise click.ClickException(project.no_db_message())
    record = _one_job(project, job)
    problem = None
    data, path = _worker_log(project, record)
    if not no_fetch and (record.status in UNFINISHED or data is None):
        problem = anyio.run(_fetch_log, record, str(project.stage_root))
        data, path = _worker_log(project, record)
    click.echo(f"{record.name}: {record.status.value} on {record.system}"
               + (f" as {record.remote_id}" if record.remote_id else "") + f" (key {record.key[:12]})")
    if record.message:
        click.echo(f"error: {record.message}")
    if escalated(record):
        click.echo(f"escalated: {escalated(record, whole=True)}")
    if data is None:
        click.echo(f"no worker log at {path}" + (f": {problem}" if problem else ""), err=True)
        return
    text = data.decode(errors="replace").splitlines()
    shown = text[-lines:] if lines else text
    click.echo(f"--- {path}" + (f" (last {len(shown)} of {len(text)} lines)" if len(shown) < len(text) else ""))
    click.echo("\n".join(shown))


def _worker_log(project: Project, record: JobRecord) -> tuple[bytes | None, str]:
    """The job's worker log and where it is: its own local directory, else the fetched bundle that
    holds it (a packed chunk's files are kept in one file per fetched batch: jobs/fetched.py)."""
    path = project.stage_root / record.job_dir / layout.WORKER_LOG
    if path.is_file():
        return path.read_bytes(), str(path)
    files = FetchedStore(project.stage_root).files(record.job_dir)
    data = files.read(layout.WORKER_LOG) if files is not None else None
    return (data, files.where(layout.WORKER_LOG)) if files is not None and data is not None else (None, str(path))


async def _mark_for_rerun(project: Project, keys: Sequence[str]) -> None:
    async with JobsDatabase(project.db_path) as db:
        await db.update_many((key, {"status": JobStatus.RERUN}) for key in keys)


@click.command()
@click.argument("names", nargs=-1, metavar="[CALL or JOB NAME]...")
@job_filters
@click.option("-y", "--yes", is_flag=True, help="Do not ask when no name or filter narrows the selection.")
def rerun(names: tuple[str, ...], filters: JobFilter, yes: bool) -> None:
    """Mark failed, died, cancelled or never-submitted jobs to be submitted afresh. Alias: retry.

    NAME is a call's job name (its chunks NAME_chunk_N too) or a job's name. The next run of
    the workflow submits the marked jobs again and re-attaches to the others (a died or
    cancelled job is otherwise left as it is: JobDiedError / JobCancelledError).
    """
    project = Project.load()
    if not project.has_db():
        raise click.ClickException(project.no_db_message())
    scope = dataclasses.replace(filters, statuses=tuple(s for s in filters.statuses if s in RERUNNABLE)
                                or RERUNNABLE)
    records = select_runs(run_async(read_jobs, project, scope), names)
    if not records:
        click.echo(f"no failed, died, cancelled or unsent jobs match ({' '.join(names) or filters.describe()}); "
                   f"nothing to rerun", err=True)
        return
    if not names and filters == JobFilter() and not yes:
        click.confirm(f"No name or filter given: mark all {len(records)} failed/died/cancelled jobs to run again?",
                      abort=True)
    anyio.run(_mark_for_rerun, project, [r.key for r in records])
    counts = ", ".join(f"{n} {s}" for s, n in Counter(r.status.value for r in records).most_common())
    click.echo(f"rerun: {len(records)} job(s) marked ({counts}); run the workflow again to submit them afresh "
               f"(its other jobs re-attach)")
