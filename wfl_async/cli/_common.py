"""Pieces every command shares: the job filters, the project's paths, running a coroutine.

The filters are one decorator (:func:`job_filters`) that adds ExPyRe's ``xpr`` options
(``-s/--status``, ``-S/--system``, ``-n/--name``, ``-i/--id``) and hands the command one
:class:`JobFilter`.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from ..config import ProjectConfig, load_config
from ..errors import WflAsyncError
from ..jobs.database import JobRecord, JobsDatabase
from ..jobs.states import FINISHED, UNFINISHED, JobStatus
from ..scheduler import get_scheduler
from ..session import DB_NAME, STAGE_DIR_NAME

__all__ = ["FINISHED", "UNFINISHED", "JobFilter", "Project", "job_filters", "read_jobs", "run_async"]

_GROUPS = {"unfinished": UNFINISHED, "finished": FINISHED}

T = TypeVar("T")


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a command acts on; every field narrows the selection, empty means all."""

    statuses: tuple[JobStatus, ...] = ()
    system: str | None = None
    """Comma-separated regular expressions, one of which must match the whole system name (as ``xpr``)."""
    name: str | None = None
    """Comma-separated regular expressions, one of which must match the whole job name (as ``xpr``)."""
    key: str | None = None
    """Start of the job's key (its content hash) or its whole job directory name."""

    async def select(self, db: JobsDatabase, within: Sequence[JobStatus] | None = None) -> list[JobRecord]:
        """Matching jobs, oldest first, restricted to the statuses ``within`` (a command's scope)."""
        statuses = list(self.statuses) or list(within or ())
        if within is not None:
            statuses = [s for s in statuses if s in within]
            if not statuses:
                return []
        records = await db.select(status=[s.value for s in statuses] or None)
        records = [r for r in records if _whole_match(self.system, r.system) and _whole_match(self.name, r.name)]
        if self.key:
            records = [r for r in records if r.key.startswith(self.key) or r.job_dir == self.key]
        return records

    def describe(self) -> str:
        """The filters as the user gave them, for messages."""
        parts = []
        if self.statuses:
            parts.append("--status " + ",".join(s.value for s in self.statuses))
        if self.system:
            parts.append(f"--system {self.system}")
        if self.name:
            parts.append(f"--name {self.name!r}")
        if self.key:
            parts.append(f"--id {self.key}")
        return " ".join(parts) or "no filters"


def _whole_match(patterns: str | None, value: str) -> bool:
    """ExPyRe ``xpr``'s rule: no filter, or one of the comma-separated regexps matches all of ``value``.

    A substring match would let ``rm -n relax -y`` delete ``prerelax`` and ``relax_2`` too.
    """
    return patterns is None or any(re.fullmatch(p.strip(), value) for p in patterns.split(","))


def _parse_statuses(ctx: click.Context, param: click.Parameter, values: Iterable[str]) -> tuple[JobStatus, ...]:
    """``-s succeeded -s failed`` or ``-s succeeded,failed``; ``finished``/``unfinished`` are groups."""
    known = {s.value: (s,) for s in JobStatus} | _GROUPS
    chosen: list[JobStatus] = []
    for value in values:
        for word in filter(None, (w.strip().lower() for w in value.split(","))):
            if word not in known:
                raise click.BadParameter(f"{word!r} is not a job status; use one of {', '.join(known)} "
                                         f"(repeat the option or separate them with commas)")
            chosen.extend(s for s in known[word] if s not in chosen)
    return tuple(chosen)


def _check_regex(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            for pattern in value.split(","):
                re.compile(pattern.strip())
        except re.error as exc:
            raise click.BadParameter(f"{value!r} is not a valid regular expression ({exc}); quote it and "
                                     f"escape special characters, e.g. 'relax\\.0[0-9]'") from None
    return value


_FILTER_OPTIONS = (
    click.option("-s", "--status", "statuses", multiple=True, callback=_parse_statuses, metavar="STATUS",
                 help="Only jobs in this status (created, submitted, started, succeeded, failed, died, "
                      "processed, cleaned, or the groups finished/unfinished). Repeat or comma-separate."),
    click.option("-S", "--system", default=None, callback=_check_regex, metavar="REGEX[,REGEX]",
                 help="Only jobs on a system whose whole name matches one of these regular expressions."),
    click.option("-n", "--name", default=None, callback=_check_regex, metavar="REGEX[,REGEX]",
                 help="Only jobs whose whole name matches one of these comma-separated regular expressions "
                      "(as xpr: 'relax' is only 'relax'; write 'relax.*' for its chunks)."),
    click.option("-i", "--id", "key", default=None, metavar="ID",
                 help="Only the job whose key starts with ID, or whose job directory is ID."),
)


def job_filters(func: Callable[..., T]) -> Callable[..., T]:
    """Add the shared filter options to a command; it receives them as ``filters: JobFilter``."""

    @functools.wraps(func)
    def wrapper(*args: Any, statuses: tuple[JobStatus, ...], system: str | None, name: str | None,
                key: str | None, **kwargs: Any) -> T:
        return func(*args, filters=JobFilter(statuses, system, name, key), **kwargs)

    for option in reversed(_FILTER_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


@dataclass(frozen=True)
class Project:
    """Where this directory's jobs live locally (found as every workflow finds them)."""

    config: ProjectConfig

    @classmethod
    def load(cls) -> Project:
        try:
            return cls(load_config())
        except WflAsyncError as exc:
            raise click.ClickException(str(exc)) from None

    @property
    def db_path(self) -> Path:
        return self.config.local_stage_dir / DB_NAME

    @property
    def stage_root(self) -> Path:
        return self.config.local_stage_dir / STAGE_DIR_NAME

    def has_db(self) -> bool:
        return self.db_path.is_file()

    def array_of(self, record: JobRecord) -> str | None:
        """The id of the job array ``record``'s job is a task of (None: submitted alone, or unknown system)."""
        config = self.config.systems.get(record.system)
        if config is None or not record.remote_id or config.scheduler == "local":
            return None
        return get_scheduler(config.scheduler).array_parent_id(record.remote_id)

    def no_db_message(self) -> str:
        where = ", ".join(map(str, self.config.config_files)) or "no config.json found"
        return (f"no jobs database at {self.db_path} (config: {where}); no job has run from here yet. "
                f"Run the command from the workflow's directory, or set EXPYRE_ROOT to its _expyre directory.")


async def read_jobs(project: Project, filters: JobFilter) -> list[JobRecord]:
    """Matching jobs through a read-only connection (no lock taken, works while a workflow writes)."""
    if not project.has_db():
        return []
    async with JobsDatabase(project.db_path, readonly=True) as db:
        return await filters.select(db)


def run_async(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a command's coroutine; turn our errors into click errors that name the fix."""
    try:
        return anyio.run(func, *args)
    except WflAsyncError as exc:
        raise click.ClickException(str(exc)) from None
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise click.ClickException(
                f"the jobs database is locked ({exc}): another process holds its write lock. Wait for it, "
                f"or if that process is gone run 'wfl-async db unlock'.") from None
        if "no such table" in str(exc):
            raise click.ClickException(
                f"the jobs database {Project.load().db_path} holds no jobs table: a workflow is creating it "
                f"right now, or its -wal file was lost (the jobs it recorded are forgotten: rerun the workflow, "
                f"it re-attaches to them from their remote job directories).") from None
        raise click.ClickException(f"jobs database error: {exc}. Check it with 'wfl-async db repair'.") from None
