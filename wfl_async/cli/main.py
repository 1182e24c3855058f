"""``wfl-async``: list, sync, cancel, clean and remove queued jobs; unlock or check the jobs database.

A thin click front end: the jobs database (:class:`~wfl_async.jobs.database.JobsDatabase`) and the
systems of the :class:`~wfl_async.session.Session` do the work, exactly as in a workflow. Names
follow ExPyRe's ``xpr`` (``ls``, ``sync``, ``rm``, ``db unlock``, the ``-s/-S/-n/-i`` filters).
``ls`` and ``status`` only read the database (read-only connection, WAL): they never wait for,
or block, a running workflow.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import click
from rich.live import Live
from rich.table import Table

from ..jobs.database import JobRecord, JobStatus, corruption_named
from ..jobs.recover import recover as recover_database
from ..report import summary_lines
from ..session import Session, session_scope
from . import _dbtools
from ._actions import Report, cancel_jobs, clean_jobs, remove_jobs, sync_jobs
from ._bench import bench
from ._common import FINISHED, UNFINISHED, JobFilter, Project, job_filters, read_jobs, run_async
from ._display import console, report_table, status_table, terminal_width
from ._doctor import doctor
from ._install import install
from ._jobs import log, ls, rerun
from ._packs import packs_table, survey_packs
from ._report import load_report, report

__all__ = ["main"]

_ALIASES = {"list": "ls", "remove": "rm", "clean-up": "clean", "retry": "rerun"}


class _Group(click.Group):
    """Accepts ``xpr``'s spellings too: ``list``, ``remove``, ``db_unlock``/``db-unlock``."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in ("db_unlock", "db-unlock"):
            return unlock
        return super().get_command(ctx, _ALIASES.get(cmd_name, cmd_name))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except sqlite3.DatabaseError as exc:  # every command: a damaged file is named, with its recovery
            named = corruption_named(Project.load().db_path, exc)
            if named is exc:
                raise
            raise click.ClickException(str(named)) from None

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command else name), command, rest


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Aliases: list = ls, remove = rm, retry = rerun, db_unlock = db unlock. The project (config.json, jobs "
                    "database) is found as workflows find it: $EXPYRE_ROOT, else _expyre/ directories from "
                    "here up, else ~/.expyre.")
@click.version_option(package_name="wfl_async")
def main() -> None:
    """Manage wfl_async's queued jobs."""


# ---------------------------------------------------------------------- helpers
async def _in_session(filters: JobFilter, within: Sequence[JobStatus],
                      action: Callable[[Session, list[JobRecord]], Awaitable[Report]]) -> tuple[int, Report]:
    async with session_scope() as session:
        records = await filters.select(session.db, within)
        return len(records), (await action(session, records) if records else Report())


def _finish(report: Report, selected: int, what: str, filters: JobFilter, within: Sequence[JobStatus]) -> None:
    """Print the report; exit with status 1 if any system failed."""
    out = console()
    if not selected:
        click.echo(f"no {'/'.join(s.value for s in within)} jobs match ({filters.describe()}); nothing to {what}",
                   err=True)
        return
    if report.changes or report.unchanged:
        out.print(report_table(report))
    counts: dict[str, int] = {}
    for change in report.changes:
        counts[change.status.value] = counts.get(change.status.value, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no status changed"
    click.echo(f"{what}: {selected} job(s) looked at; {summary}"
               + (f"; {len(report.unchanged)} unchanged" if report.unchanged else ""))
    _exit_on_errors(report)


def _exit_on_errors(report: Report) -> None:
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    if report.errors:
        raise click.exceptions.Exit(1)


def _require_db(project: Project) -> bool:
    if not project.has_db():
        click.echo(project.no_db_message(), err=True)
        return False
    return True


# ---------------------------------------------------------------------- ls / status
@main.command()
@job_filters
@click.option("-w", "--watch", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Refresh every SECONDS until Ctrl-C.")
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --watch, stop after N refreshes.")
@click.option("--summary", is_flag=True, help="A few lines instead: jobs, where they ran, wall and core time, "
                                               "failures, commands (wfl-async report draws them).")
def status(filters: JobFilter, watch: float | None, count: int | None, summary: bool) -> None:
    """Jobs per system and state, from the database (read-only); ARRAYS: the job arrays that
    queued and running jobs are tasks of; UNSENT: never submitted, or marked by rerun."""
    project = Project.load()
    if summary:
        if _require_db(project):
            click.echo("\n".join(summary_lines(load_report(project, filters=filters), "jobs")))
        return

    def table() -> Table:
        return status_table(run_async(read_jobs, project, filters), project.array_of, terminal_width())

    if watch is None:
        if _require_db(project):
            console().print(table())
        return
    out = console()
    shown = 0
    try:
        if out.is_terminal:
            with Live(table(), console=out, auto_refresh=False) as live:
                shown = 1
                while count is None or shown < count:
                    time.sleep(watch)
                    live.update(table(), refresh=True)
                    shown += 1
        else:
            while count is None or shown < count:
                if shown:
                    time.sleep(watch)
                out.print(table())
                shown += 1
    except KeyboardInterrupt:
        pass


@main.command()
@job_filters
def workers(filters: JobFilter) -> None:
    """Packed chunks queued, running and done per system and pack, and the worker jobs alive.

    Asks each system once (its poll command); changes nothing.
    """
    project = Project.load()
    if not _require_db(project):
        return
    rows, errors = run_async(_packs_in_session, filters)
    if rows:
        console().print(packs_table(rows))
    else:
        click.echo(f"no packed chunks match ({filters.describe()})", err=True)
    _exit_on_errors(Report(errors=errors))


async def _packs_in_session(filters: JobFilter) -> tuple[list[Any], list[str]]:
    async with session_scope() as session:
        return await survey_packs(session, await filters.select(session.db))


# ---------------------------------------------------------------------- sync / cancel
@main.command()
@job_filters
def sync(filters: JobFilter) -> None:
    """Ask each system once about submitted/started jobs and record what became of them.

    Finished jobs become succeeded or failed (their files are fetched, so a rerun gets the
    result at once); jobs gone from the queue without a final marker become died.
    """
    project = Project.load()
    if not _require_db(project):
        return
    within = (JobStatus.SUBMITTED, JobStatus.STARTED)
    selected, report = run_async(_in_session, filters, within, sync_jobs)
    _finish(report, selected, "sync", filters, within)


@main.command()
@job_filters
@click.option("-y", "--yes", is_flag=True, help="Do not ask before cancelling every unfinished job.")
def cancel(filters: JobFilter, yes: bool) -> None:
    """Cancel unfinished jobs: one scheduler command per system; they become died ("cancelled by user")."""
    project = Project.load()
    if not _require_db(project):
        return
    if filters == JobFilter() and not yes:
        click.confirm("No filter given: cancel every unfinished job of this project?", abort=True)
    selected, report = run_async(_in_session, filters, UNFINISHED, cancel_jobs)
    _finish(report, selected, "cancel", filters, UNFINISHED)


# ---------------------------------------------------------------------- clean / rm
_remote_option = click.option("--remote/--no-remote", default=True, show_default=True,
                              help="Also delete the job directories on their systems.")


@main.command()
@job_filters
@_remote_option
def clean(filters: JobFilter, remote: bool) -> None:
    """Delete directories of finished jobs and mark them cleaned (a rerun then runs them afresh).

    With --no-remote only the local copies go and the statuses stay: a rerun fetches the
    results again.
    """
    project = Project.load()
    if not _require_db(project):
        return

    async def action(session: Session, records: list[JobRecord]) -> Report:
        return await clean_jobs(session, records, remote=remote)

    selected, report = run_async(_in_session, filters, FINISHED, action)
    _finish(report, selected, "clean", filters, FINISHED)


@main.command()
@job_filters
@_remote_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("-f", "--force", is_flag=True, help="Also remove unfinished jobs, cancelling them first.")
def rm(filters: JobFilter, remote: bool, yes: bool, force: bool) -> None:
    """Delete jobs from the database, with their directories. Alias: remove."""
    project = Project.load()
    if not _require_db(project):
        return
    records = run_async(read_jobs, project, filters)
    if not records:
        click.echo(f"no jobs match ({filters.describe()}); nothing to remove", err=True)
        return
    unfinished = [r for r in records if r.status in UNFINISHED]
    if unfinished and not force:
        names = ", ".join(sorted({f"{r.name} ({r.status.value})" for r in unfinished}))
        raise click.ClickException(
            f"{len(unfinished)} of the {len(records)} matching jobs are unfinished: {names}. Pass --force to "
            f"cancel and remove them too, or narrow the selection (e.g. --status finished).")
    if not yes:
        click.confirm(f"Remove {len(records)} job(s) ({filters.describe()}) from the database"
                      + (" and delete their directories" + (" on their systems too" if remote else ""))
                      + "?", abort=True)
    selected, report = run_async(_remove, filters, remote, force)
    out = console()
    if report.changes or report.unchanged:
        out.print(report_table(report))
    click.echo(f"removed {len(report.removed)} of {selected} job(s)")
    _exit_on_errors(report)


async def _remove(filters: JobFilter, remote: bool, force: bool) -> tuple[int, Report]:
    async with session_scope() as session:
        records = await filters.select(session.db)
        removable = [r for r in records if r.status not in UNFINISHED]
        report = Report()
        if force:
            report = await cancel_jobs(session, [r for r in records if r.status in UNFINISHED])
            kept = {r.key for r, _ in report.unchanged}  # being submitted, or its system failed
            removable.extend(r for r in records if r.status in UNFINISHED and r.key not in kept)
        removed = await remove_jobs(session, removable, remote=remote)
        report.removed, report.errors = removed.removed, [*report.errors, *removed.errors]
        return len(records), report


# ---------------------------------------------------------------------- db
@main.group()
def db() -> None:
    """Look after the jobs database (wfl_async_jobs.db)."""


@db.command()
@click.option("--timeout", type=click.FloatRange(min=0), default=5.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the write lock.")
@click.option("--other-hosts", is_flag=True,
              help="Also release 'created' jobs claimed from other hosts (only when no workflow runs there).")
def unlock(timeout: float, other_hosts: bool) -> None:
    """Recover from a crashed writer: take and release the lock, checkpoint, release abandoned claims."""
    project = Project.load()
    if not _require_db(project):
        return
    report = _dbtools.unlock(project.db_path, timeout=timeout, other_hosts=other_hosts)
    if not report.ok:
        raise click.ClickException(report.problem)
    for line in report.lines:
        click.echo(line)
    click.echo(f"{project.db_path}: unlocked")


@db.command()
def repair() -> None:
    """Check the database's integrity (read-only) and report."""
    project = Project.load()
    if not _require_db(project):
        return
    report = _dbtools.repair(project.db_path)
    if report.ok:
        click.echo(f"{project.db_path}: ok ({report.rows} jobs, integrity check passed)")
        return
    problems = "\n  ".join(report.problems[:50])
    raise click.ClickException(
        f"{project.db_path} is damaged:\n  {problems}\nStop every workflow of this project, then run "
        f"'wfl-async db recover': it keeps the damaged file, copies every readable job into a new database, "
        f"and the next run re-attaches to the other jobs from their remote job directories.")


@db.command()
def recover() -> None:
    """Rebuild a damaged database: keep the damaged file, copy every readable job into a new one."""
    project = Project.load()
    if not _require_db(project):
        return
    holders = _dbtools.open_processes(project.db_path)
    if holders:
        raise click.ClickException(
            f"{project.db_path} is open in process(es) {', '.join(str(pid) for pid, _ in holders)}: stop them "
            f"first (a workflow writing it meanwhile would write into the damaged file), then run this again.")
    report = recover_database(project.db_path)
    click.echo(f"{project.db_path}: recovered {report.kept} job(s)"
               + (f"; {report.skipped} damaged row(s) could not be read" if report.skipped else "")
               + ("" if report.readable else "; the damaged file could not be read at all")
               + f". The damaged file is kept as {report.broken}.")
    click.echo("Rerun the workflow: it re-attaches to the jobs the database forgot (queued or finished) "
               "from their remote job directories; nothing is submitted twice.")


main.add_command(doctor)
main.add_command(install)
main.add_command(bench)
main.add_command(report)
main.add_command(ls)
main.add_command(log)
main.add_command(rerun)


def run(args: list[str] | None = None) -> Any:
    """Entry point for ``python -m wfl_async.cli``."""
    return main.main(args=args, prog_name="wfl-async")
