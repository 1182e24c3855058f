"""The jobs database: the only place where local job state lives.

sqlite in WAL mode (readers never block the writer, so ``wfl-async list`` works while a
workflow runs), reached through aiosqlite (one connection = one thread = one writer per
process, never blocking the event loop), parameterised SQL only, short transactions.
Several processes may share the file: claims run in ``BEGIN IMMEDIATE`` transactions, so
two scripts started at once with the same call create, and submit, the job once.

Statuses are readable strings (``sqlite3 wfl_async_jobs.db 'select * from jobs'`` is a
debugging tool): ExPyRe's ``created, submitted, started, succeeded, failed, died,
processed, cleaned``.
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite
import anyio

from .._coalesce import Coalescer, Pending
from .._private import private_file

__all__ = ["Claim", "JobRecord", "JobStatus", "JobsDatabase", "owner_alive", "process_owner"]


class JobStatus(StrEnum):
    CREATED = "created"
    """Claimed and staged locally; possibly being submitted."""
    SUBMITTED = "submitted"
    """Accepted by the queueing system."""
    STARTED = "started"
    """The job's worker began running the function."""
    SUCCEEDED = "succeeded"
    """The function returned; its value is waiting to be fetched or was fetched."""
    FAILED = "failed"
    """The function raised. A rerun creates the job afresh."""
    DIED = "died"
    """Left the queue without a final marker (time limit, node failure, cancelled)."""
    PROCESSED = "processed"
    """Its result was used by the caller. A rerun creates the job afresh (as ExPyRe)."""
    CLEANED = "cleaned"
    """Its remote directory was removed."""


REATTACH = frozenset({JobStatus.CREATED, JobStatus.SUBMITTED, JobStatus.STARTED, JobStatus.SUCCEEDED,
                      JobStatus.DIED})
"""A rerun re-attaches to jobs in these states instead of creating them again."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    system      TEXT NOT NULL,
    status      TEXT NOT NULL,
    job_dir     TEXT NOT NULL,
    remote_root TEXT,
    remote_id   TEXT,
    owner       TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    message     TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_system ON jobs(system);
"""

_COLUMNS = ("key", "name", "system", "status", "job_dir", "remote_root", "remote_id", "owner",
            "created_at", "updated_at", "message")


@dataclass(frozen=True)
class JobRecord:
    key: str
    name: str
    system: str
    status: JobStatus
    job_dir: str
    remote_root: str | None
    remote_id: str | None
    owner: str | None
    created_at: float
    updated_at: float
    message: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> JobRecord:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["status"] = JobStatus(values["status"])
        return cls(**values)


@dataclass(frozen=True)
class Claim:
    """Result of :meth:`JobsDatabase.claim`: ``fresh`` means this process must stage and submit."""

    record: JobRecord
    fresh: bool
    previous: JobStatus | None = None
    """Status before this claim; a fresh claim over a failed/died/processed job must start clean."""


@dataclass
class _ClaimRequest(Pending):
    key: str
    name: str
    system: str
    job_dir: str
    owner: str
    result: Claim | None = None


@dataclass
class _UpdateRequest(Pending):
    key: str
    values: dict[str, Any]


def process_owner() -> str:
    """An owner tag for claims: host, pid and a random token (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process that claimed a job may still be submitting it."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host: cannot tell, assume alive (the remote submit lock still guards)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobsDatabase:
    """Async access to ``wfl_async_jobs.db``. Use as ``async with JobsDatabase(path) as db``."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._conn: aiosqlite.Connection | None = None
        self._write_lock = anyio.Lock()
        """Coroutines share one connection: their transactions must not interleave."""
        self._claims: Coalescer[_ClaimRequest] = Coalescer(self._claim_batch)
        self._updates: Coalescer[_UpdateRequest] = Coalescer(self._update_batch)

    async def __aenter__(self) -> JobsDatabase:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        if self.readonly:
            # quote the path: '#', '?' or '%' in a directory name would otherwise end or change it,
            # and sqlite would create (read-write!) an empty database at the truncated path
            uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro"
            self._conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        else:
            private_file(self.path)  # [io] the jobs database is its owner's only
            self._conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=60)
            await self._initialise()
        await self._conn.execute("PRAGMA busy_timeout=60000")

    async def _initialise(self) -> None:
        """WAL mode and the schema. Switching the journal mode of a new file does not wait for the
        busy timeout when another process is doing the same, so retry (two scripts started at once)."""
        assert self._conn is not None
        for attempt in range(100):
            try:
                await self._conn.execute("PRAGMA journal_mode=WAL")
                await self._conn.execute("PRAGMA synchronous=NORMAL")
                await self._conn.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                await anyio.sleep(0.05 + 0.05 * random.random())

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("JobsDatabase used outside 'async with'")
        return self._conn

    # ------------------------------------------------------------------ claims
    async def claim(self, *, key: str, name: str, system: str, job_dir: str, owner: str) -> Claim:
        """Atomically find or create the job ``key``.

        A job in a :data:`REATTACH` state is returned as it is (not fresh), unless it is still
        ``created`` by a process that is gone, which this process then takes over. A job that
        failed, was processed or cleaned, or does not exist, is (re)created, fresh. Claims made
        by many coroutines at once share one transaction.
        """
        request = _ClaimRequest(key=key, name=name, system=system, job_dir=job_dir, owner=owner)
        await self._claims(request)
        assert request.result is not None
        return request.result

    async def _claim_batch(self, batch: list[_ClaimRequest]) -> None:
        now = time.time()
        outcomes: dict[str, tuple[bool, JobStatus | None]] = {}
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                for r in batch:
                    if r.key not in outcomes:  # the same call twice in one batch: claimed once
                        outcomes[r.key] = await self._claim_in_transaction(r.key, r.name, r.system, r.job_dir,
                                                                           r.owner, now)
                await self.conn.execute("COMMIT")
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
        records = {rec.key: rec for rec in await self._select_keys(list(outcomes))}
        first: set[str] = set()
        for r in batch:
            fresh, previous = outcomes[r.key]
            r.result = Claim(records[r.key], fresh and r.key not in first, previous)
            first.add(r.key)
            r.settle()

    async def _select_keys(self, keys: list[str]) -> list[JobRecord]:
        records: list[JobRecord] = []
        for start in range(0, len(keys), 500):  # sqlite's limit on bound parameters
            chunk = keys[start:start + 500]
            async with self.conn.execute(f"SELECT * FROM jobs WHERE key IN ({', '.join('?' * len(chunk))})",
                                         chunk) as cursor:
                records.extend(JobRecord.from_row(row) for row in await cursor.fetchall())
        return records

    async def _claim_in_transaction(self, key: str, name: str, system: str, job_dir: str, owner: str,
                                    now: float) -> tuple[bool, JobStatus | None]:
        """One claim inside the caller's transaction: (fresh, status before)."""
        row = await self._fetch_one("SELECT * FROM jobs WHERE key = ?", (key,))
        previous = row.status if row is not None else None
        if row is None:
            await self.conn.execute(
                "INSERT INTO jobs (key, name, system, status, job_dir, owner, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, name, system, JobStatus.CREATED.value, job_dir, owner, now, now))
            return True, previous
        if row.status not in REATTACH or (row.status is JobStatus.CREATED and not owner_alive(row.owner)):
            await self.conn.execute(
                "UPDATE jobs SET name = ?, system = ?, status = ?, job_dir = ?, owner = ?, remote_id = "
                "CASE WHEN status = 'created' THEN remote_id ELSE NULL END, "
                "message = NULL, updated_at = ? WHERE key = ?",
                (name, system, JobStatus.CREATED.value, job_dir, owner, now, key))
            return True, previous
        return False, previous

    # ------------------------------------------------------------------ updates
    async def update_many(self, updates: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Apply ``(key, {column: value})`` updates in one transaction (the poller's batch)."""
        now = time.time()
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for key, values in updates:
            values = {k: (v.value if isinstance(v, Enum) else v) for k, v in values.items()}
            bad = set(values) - set(_COLUMNS)
            if bad:
                raise ValueError(f"unknown job columns {bad}")
            assignments = ", ".join(f"{column} = ?" for column in values)
            statements.append((f"UPDATE jobs SET {assignments}, updated_at = ? WHERE key = ?",
                               (*values.values(), now, key)))
        if not statements:
            return
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    await self.conn.execute(sql, params)
                await self.conn.execute("COMMIT")
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise

    async def update(self, key: str, **values: Any) -> None:
        """Update one job; updates made by many coroutines at once share one transaction."""
        await self._updates(_UpdateRequest(key=key, values=values))

    async def _update_batch(self, batch: list[_UpdateRequest]) -> None:
        await self.update_many((r.key, r.values) for r in batch)
        for request in batch:
            request.settle()

    async def delete(self, keys: Sequence[str]) -> None:
        async with self._write_lock:
            await self.conn.executemany("DELETE FROM jobs WHERE key = ?", [(k,) for k in keys])

    # ------------------------------------------------------------------ queries
    async def get(self, key: str) -> JobRecord | None:
        return await self._fetch_one("SELECT * FROM jobs WHERE key = ?", (key,))

    async def select(self, *, status: Sequence[str] | None = None, system: str | None = None,
                     name: str | None = None) -> list[JobRecord]:
        """Jobs matching every given filter; ``name`` is a regular expression (Python ``re.search``)."""
        import re

        clauses: list[str] = []
        params: list[str] = []
        if status:
            clauses.append(f"status IN ({', '.join('?' * len(status))})")
            params.extend(status)
        if system:
            clauses.append("system = ?")
            params.append(system)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        async with self.conn.execute(f"SELECT * FROM jobs {where} ORDER BY created_at", params) as cursor:
            rows = [JobRecord.from_row(r) for r in await cursor.fetchall()]
        if name:
            pattern = re.compile(name)
            rows = [r for r in rows if pattern.search(r.name)]
        return rows

    async def _fetch_one(self, sql: str, params: Sequence[Any]) -> JobRecord | None:
        async with self.conn.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return JobRecord.from_row(row) if row is not None else None
