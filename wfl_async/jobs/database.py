"""The jobs database: the only place where local job state lives.

sqlite in WAL mode (readers never block the writer, so ``wfl-async list`` works while a
workflow runs), parameterised SQL only, short transactions. Reads go through aiosqlite; every
write of the process goes through one writer task that applies all the writes queued so far
(and those nobody waits for that come within a quarter second) in one transaction, in one call
to a thread of its own (one thread hop per transaction, not per statement: at 10^5 jobs a hop
per statement cost more than the statements), never blocking the event loop.
Several processes may share the file: claims run in ``BEGIN IMMEDIATE`` transactions, so
two scripts started at once with the same call create, and submit, the job once.

Statuses are readable strings (``sqlite3 wfl_async_jobs.db 'select * from jobs'`` is a
debugging tool): ExPyRe's ``created, submitted, started, succeeded, failed, died,
processed, cleaned``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import math
import random
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite
import anyio
import anyio.abc

from .._private import private_file
from ..errors import DatabaseCorruptError
from ..failures import permanent_cause, permanent_error
from .owner import owner_alive
from .route import RouteKind
from .states import KEPT_OVER, REATTACH, JobStatus

__all__ = ["Claim", "JobRecord", "JobStatus", "JobsDatabase", "corruption_named"]

log = logging.getLogger(__name__)

MAX_BATCH = 1000
"""Most writes the writer task puts in one transaction."""
UNWAITED_GATHER = 1.0
"""Seconds the writer gathers writes nobody waits for into one transaction (:meth:`JobsDatabase._gather_unwaited`).
A second, not a quarter: jobs submitted one by one (about 8 a second by sbatch here) each queue their
submission's record, and a quarter of a second made a transaction of two or three of them (387 for 1,000
jobs, 0.2 ms of driver CPU a job); a reader never waits for it (:meth:`JobsDatabase._caught_up`)."""
_LOCKED_BACKOFF = (0.05, 5.0)
"""First and longest pause (s) between attempts while another process holds the write lock."""


def corruption_named(path: Path, exc: BaseException) -> BaseException:
    """``exc`` as a :class:`DatabaseCorruptError` naming ``path`` and the recovery that works, if it
    says the file is damaged (sqlite's CORRUPT or NOTADB); any other error is returned as it is."""
    name = getattr(exc, "sqlite_errorname", "")
    if not isinstance(exc, sqlite3.DatabaseError) or not (
            name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(exc) or "not a database" in str(exc)):
        return exc
    error = DatabaseCorruptError(
        f"the jobs database {path} is damaged ({exc}). Stop every workflow of this project, then run "
        f"'wfl-async db recover' in its directory: it keeps the damaged file as {path.name}.broken-<time>, "
        f"copies every job it can still read into a new database, and the next run of the workflow "
        f"re-attaches to the other jobs from their remote job directories (nothing is submitted twice).")
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def _corruption_named(path: Path) -> Iterator[None]:
    """Raise a damaged file's sqlite error as :func:`corruption_named` names it (others unchanged)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        named = corruption_named(path, exc)
        if named is exc:
            raise
        raise named from exc


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
    message     TEXT,
    submitted_at REAL,
    started_at  REAL,
    finished_at REAL,
    fetched_at  REAL,
    worker      TEXT,
    cores       INTEGER,
    max_time    REAL,
    route       TEXT,
    pack_id     TEXT,
    end_cause   TEXT,
    escalation  TEXT,
    moved_to    TEXT,
    moved_from  TEXT,
    move_reason TEXT
);
CREATE TABLE IF NOT EXISTS costs (
    owner       TEXT PRIMARY KEY,
    started_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    counts      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_system ON jobs(system);
"""

_COLUMNS = ("key", "name", "system", "status", "job_dir", "remote_root", "remote_id", "owner",
            "created_at", "updated_at", "message", *(TIMING_COLUMNS := (
                "submitted_at", "started_at", "finished_at", "fetched_at", "worker", "cores", "max_time")),
            "route", "pack_id", "end_cause", "escalation",
            *(MOVE_COLUMNS := ("moved_to", "moved_from", "move_reason")))
"""Every column, in table order; those added since the first schema come last, so a database made by
an older version gains them with ``ALTER TABLE ... ADD COLUMN`` (:func:`_migrate`) and old rows read
them as NULL."""
_ADDED_COLUMNS = (*TIMING_COLUMNS, "route", "pack_id", "end_cause", "escalation", *MOVE_COLUMNS)
"""Columns added since the first schema: a database made before gets them at open (:func:`_migrate`)."""
_COLUMN_TYPES = {"worker": "TEXT", "cores": "INTEGER", "route": "TEXT", "pack_id": "TEXT", "end_cause": "TEXT",
                 "escalation": "TEXT", **{column: "TEXT" for column in MOVE_COLUMNS}}
"""SQL types of the added columns that are not REAL."""
_BACKFILL_ROUTE = """
UPDATE jobs SET
    route = CASE WHEN remote_id LIKE 'pack:%' THEN 'packed' ELSE 'direct' END,
    pack_id = CASE WHEN remote_id LIKE 'pack:%' THEN substr(remote_id, 6, instr(substr(remote_id, 6), ':') - 1) END
WHERE remote_id IS NOT NULL AND route IS NULL
"""
"""The route of jobs submitted before it was recorded: a packed chunk's remote id was ``pack:<pack id>:<job dir>``."""


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
    submitted_at: float | None = None
    """When the scheduler (or the pack's queue) accepted it (local clock)."""
    started_at: float | None = None
    """When its worker started: the started marker's time once fetched, else when a poll first saw it."""
    finished_at: float | None = None
    """When its worker wrote the final marker (that marker's time)."""
    fetched_at: float | None = None
    """When its result came back (local clock)."""
    worker: str | None = None
    """Where it ran: ``host`` for a job of its own, ``host/worker`` for a packed chunk."""
    cores: int | None = None
    """Cores it asked for (all its nodes)."""
    max_time: float | None = None
    """Its time limit (s)."""
    route: RouteKind | None = None
    """How it runs (None: not submitted yet)."""
    pack_id: str | None = None
    """The pack a packed chunk is queued in."""
    end_cause: str | None = None
    """Why it died, by the scheduler's accounting (an :class:`~wfl_async.jobs.ended.EndCause` value)."""
    escalation: str | None = None
    """What was done after kills at its limits, JSON (:class:`~wfl_async.jobs.escalation.Escalation`);
    kept when the job is created afresh, so a rerun goes on from the resources last tried."""
    moved_to: str | None = None
    """A move to this system is under way (recorded before the chunk is taken back: a rerun finishes it)."""
    moved_from: str | None = None
    """The system it was taken back from, waiting, before it went to ``system`` (docs/multi_system.md)."""
    move_reason: str | None = None
    """Why it moved (or is moving)."""

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> JobRecord:
        # a read-only look at a database an older version made lacks the added columns: they stay None
        values = dict(zip(_COLUMNS, row, strict=False))
        values["status"] = JobStatus(values["status"])
        if values.get("route") is not None:
            values["route"] = RouteKind(values["route"])
        return cls(**values)


@dataclass(frozen=True)
class Claim:
    """Result of :meth:`JobsDatabase.claim`: ``fresh`` means this process must stage and submit."""

    record: JobRecord
    fresh: bool
    previous: JobStatus | None = None
    """Status before this claim; a fresh claim over a failed/died/processed job must start clean."""


@dataclass
class _Write:
    """One request to the writer task: claims, updates or deletes, settled through ``done``."""

    claims: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    """(key, name, system, job_dir, owner) to claim."""
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    costs: list[tuple[str, float, str]] = field(default_factory=list)
    """(owner, started_at, counts as JSON): what a session's commands cost so far."""
    rows: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    """``(INSERT statement, parameters)`` into the tables of measured times and chunk groupings."""
    claimed: list[Claim] = field(default_factory=list)
    error: BaseException | None = None
    done: anyio.Event | None = None
    """Set once it is applied or failed; made by :meth:`JobsDatabase._submit` for a write someone waits
    for, none for one nobody does (a job's submission, a poll's changes: an event each was a part of
    issue 16's per-job cost)."""

    @property
    def waited(self) -> bool:
        """Someone awaits this write; if not, a failure is logged instead."""
        return self.done is not None

    def settle(self, error: BaseException | None = None) -> None:
        """It is applied (``error``: it failed); its waiter, if any, wakes."""
        self.error = error
        if self.done is not None:
            self.done.set()


class JobsDatabase:
    """Async access to ``wfl_async_jobs.db``.

    Every write goes through one writer task (:meth:`serve`), fed by a memory stream: writes
    made by many coroutines at about the same time share one transaction, a cancelled caller
    only stops waiting for its own write (which is still applied), and while another process
    holds the write lock the writer waits (with backoff, logged) instead of failing. Reads use
    a connection of their own, so they keep working meanwhile (WAL). Use as ``async with
    JobsDatabase(path) as db`` (which runs the writer itself), or :meth:`open` then
    ``await task_group.start(db.serve)``.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._conn: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        """The writer task's connection, used only inside :meth:`_transaction`, in :attr:`_writer_thread`."""
        self._writer_thread = anyio.CapacityLimiter(1)
        """The writer's own thread: a transaction never waits behind other work in anyio's default pool."""
        self._send, self._receive = anyio.create_memory_object_stream[_Write](math.inf)
        self._own_writer: asyncio.Task[None] | None = None
        self._pending = 0
        """Writes queued and not yet applied (or failed): reads wait for them first (:meth:`_caught_up`)."""
        self._gathering: anyio.Event | None = None
        """Set while the writer gathers writes nobody waits for: a waited write (or a full batch) sets it."""
        self._gathering_room = MAX_BATCH
        """Writes that fill the batch being gathered."""

    async def __aenter__(self) -> JobsDatabase:
        await self.open()
        if not self.readonly:
            # a task of its own (aiosqlite is asyncio's), as the context may be left by another task
            self._own_writer = asyncio.get_running_loop().create_task(self.serve())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._own_writer is not None:
            self._own_writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._own_writer
            self._own_writer = None
        await self.close()

    async def open(self) -> None:
        """Connect (creating the file and schema unless read-only).

        :raises DatabaseCorruptError: the file is not a readable sqlite database
        """
        try:
            if self.readonly:
                # quote the path: '#', '?' or '%' in a directory name would otherwise end or change it,
                # and sqlite would create (read-write!) an empty database at the truncated path
                uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro"
                self._conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
                self._reader = self._conn
            else:
                private_file(self.path)  # the jobs database is its owner's only
                # the schema and its migration on a connection of their own, closed once done
                self._conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=5)
                await self._initialise()
                await self._conn.close()
                self._conn = None
                self._writer = await anyio.to_thread.run_sync(_writer_connection, self.path,
                                                              limiter=self._writer_thread)
                self._reader = await aiosqlite.connect(self.path, isolation_level=None, timeout=60)
            await self._reader.execute("PRAGMA busy_timeout=60000")
            async with self._reader.execute("SELECT count(*) FROM jobs"):
                pass
        except sqlite3.DatabaseError:
            await self.close()
            with _corruption_named(self.path):
                raise

    async def _initialise(self) -> None:
        """WAL mode and the schema. Switching the journal mode of a new file does not wait for the
        busy timeout when another process is doing the same, so retry (two scripts started at once).

        The schema is checkpointed into the main file at once (a passive checkpoint: it waits for
        nobody): a -wal file lost later then forgets only the recent jobs, never the tables, and
        ``wfl-async ls`` still lists what is left. Until the writes were batched, the schema reached
        the main file by the early checkpoints of many small transactions, not by design."""
        assert self._conn is not None
        for attempt in range(100):
            try:
                await self._conn.execute("PRAGMA journal_mode=WAL")
                await self._conn.execute("PRAGMA synchronous=NORMAL")
                await self._conn.executescript(_SCHEMA)
                await _migrate(self._conn)
                await self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                await anyio.sleep(0.05 + 0.05 * random.random())


    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await anyio.to_thread.run_sync(writer.close, limiter=self._writer_thread)
        for conn in {id(c): c for c in (self._conn, self._reader) if c is not None}.values():
            await conn.close()
        self._conn = self._reader = None

    @property
    def conn(self) -> aiosqlite.Connection:
        """The reading connection (writes go through the writer task)."""
        if self._reader is None:
            raise RuntimeError("JobsDatabase used outside 'async with'")
        return self._reader

    # ------------------------------------------------------------------ the writer
    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The writer task: takes every write queued so far (gathering those nobody waits for a little
        longer), applies them in one transaction, repeats."""
        task_status.started()
        batch: list[_Write] = []
        try:
            async for first in self._receive:
                batch = [first, *self._queued(MAX_BATCH - 1)]
                if len(batch) < MAX_BATCH and not any(write.waited for write in batch):
                    await self._gather_unwaited(MAX_BATCH - len(batch))
                    batch += self._queued(MAX_BATCH - len(batch))
                # shielded: a write taken from the stream is finished even while the session closes
                with anyio.CancelScope(shield=True):
                    await self._write_batch(batch)
                batch = []
        finally:
            with anyio.CancelScope(shield=True):  # what was taken or queued before the end is written too
                if batch:
                    await self._write_batch(batch)
                while batch := self._queued():
                    await self._write_batch(batch)

    async def _gather_unwaited(self, room: int) -> None:
        """Let the writes nobody waits for pile up in the stream for :data:`UNWAITED_GATHER` seconds, until
        one that someone waits for comes (a claim, a read catching up: never delayed) or ``room`` more
        writes are queued (the batch is then a transaction's worth, :data:`MAX_BATCH`).

        The writes nobody waits for come one by one (a job's submission as the scheduler's answer names
        it, a poll's or a fetch's changes): a transaction each was a thread hop and a commit per job
        (issue 16). A driver killed meanwhile loses at most these records, as it could before they were
        applied: a rerun finds a submitted job through its remote lock, a finished one by its markers.
        The writer sleeps once meanwhile, woken early by :meth:`_queue`: taking each write as it came
        woke it once per job (a task step and a cancel scope each, issue 16's per-job cost).
        """
        self._gathering, self._gathering_room = anyio.Event(), room
        try:
            with anyio.move_on_after(UNWAITED_GATHER):
                await self._gathering.wait()
        finally:
            self._gathering = None

    def _queued(self, most: int = MAX_BATCH) -> list[_Write]:
        batch: list[_Write] = []
        while len(batch) < most:
            try:
                batch.append(self._receive.receive_nowait())
            except anyio.WouldBlock:
                break
        return batch

    async def _submit(self, write: _Write) -> _Write:
        if self._writer is None or self.readonly:
            raise RuntimeError("JobsDatabase written outside 'async with' (or opened read-only)")
        write.done = anyio.Event()
        self._queue(write)
        await write.done.wait()  # a cancelled caller stops waiting; the write is still applied
        if write.error is not None:
            raise write.error
        return write

    def _queue(self, write: _Write) -> None:
        self._pending += 1
        self._send.send_nowait(write)
        if self._gathering is not None and (
                write.waited or self._send.statistics().current_buffer_used >= self._gathering_room):
            self._gathering.set()  # the writer stops gathering (:meth:`_gather_unwaited`)

    async def _caught_up(self) -> None:
        """A read sees this process's own writes: it waits for those queued before it, if any.

        A poll's or fetch's updates are queued, not waited for (a result never waits behind the
        writer); a caller woken by them and reading its job's record must still find them.
        """
        if self._pending and self._writer is not None and not self.readonly:
            with contextlib.suppress(Exception):  # a failed write was logged or raised to its own waiter
                await self._submit(_Write())

    async def _write_batch(self, batch: list[_Write]) -> None:
        try:
            await self._write_batch_retried(batch)
        finally:
            self._pending -= len(batch)

    async def _write_batch_retried(self, batch: list[_Write]) -> None:
        pause, waited = _LOCKED_BACKOFF[0], 0.0
        while True:
            try:
                await self._transaction(batch)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    self._fail(batch, exc)
                    return
                log.warning("jobs database %s is locked by another process (%s); %d write(s) wait, "
                            "retrying (%.0f s so far)", self.path, exc, len(batch), waited)
                delay = pause * (0.5 + random.random())
                await anyio.sleep(delay)
                waited += delay + 5  # plus the connection's busy timeout
                pause = min(pause * 2, _LOCKED_BACKOFF[1])
                continue
            except Exception as exc:
                self._fail(batch, exc)
                return
            for write in batch:
                write.settle()
            return

    def _fail(self, batch: list[_Write], exc: BaseException) -> None:
        exc = corruption_named(self.path, exc)
        cause = permanent_cause(exc if isinstance(exc, OSError) else str(exc))  # SQLITE_FULL: the disk is full
        if cause is not None:
            exc = permanent_error(cause, system="local", path=str(self.path.parent), doing=f"recording "
                                  f"{sum(len(w.updates) + len(w.claims) for w in batch)} job update(s) in "
                                  f"{self.path.name}", detail=str(exc), consequence=(
                                      "The jobs stay as they are on their systems (queued, running or finished)."))
        for write in batch:
            if not write.waited:
                log.error("could not record %d job update(s) and %d measured time(s) in %s: %s", len(write.updates),
                          len(write.rows), self.path, exc)
            write.settle(exc)

    async def _transaction(self, batch: list[_Write]) -> None:
        """``batch`` in one transaction, in one call to the writer's thread."""
        claimed = await anyio.to_thread.run_sync(self._transaction_in_thread, batch, limiter=self._writer_thread)
        for write, claims in zip(batch, claimed, strict=True):
            write.claimed = claims

    def _transaction_in_thread(self, batch: list[_Write]) -> list[list[Claim]]:
        """The writes of ``batch``, in order, in one ``BEGIN IMMEDIATE`` transaction; each write's claims.

        Consecutive claims (of any writes) go as one claim of them all, and consecutive statements with
        the same SQL as one ``executemany``: at 10^4 chunks a call per chunk and statement was most of the
        writer's time (issue 16). The order of the writes is kept.
        """
        conn = self._writer
        assert conn is not None
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes: dict[str, tuple[bool, JobStatus | None]] = {}
            claims: list[tuple[str, str, str, str, str]] = []
            statements: list[tuple[str, tuple[Any, ...]]] = []

            def apply_claims() -> None:
                if claims:
                    outcomes.update(_claim_all(conn, [c for c in claims if c[0] not in outcomes], now))
                    claims.clear()

            def apply_statements() -> None:
                for sql, rows in _grouped(statements):
                    conn.executemany(sql, rows)
                statements.clear()

            for write in batch:
                if write.claims:
                    apply_statements()
                    claims.extend(write.claims)
                if write.updates or write.deletes or write.rows or write.costs:
                    apply_claims()
                    statements += _update_statements(write.updates, now)
                    statements += [(_DELETE, (key,)) for key in write.deletes]
                    statements += write.rows
                    statements += [(_INSERT_COSTS, (owner, started, now, counts)) for owner, started, counts in
                                   write.costs]
            apply_claims()
            apply_statements()
            records = {rec.key: rec for rec in _select_keys(conn, list(outcomes))}
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        first: set[str] = set()
        claimed: list[list[Claim]] = []
        for write in batch:
            claims_made = []
            for key, *_ in write.claims:
                fresh, previous = outcomes[key]
                claims_made.append(Claim(records[key], fresh and key not in first, previous))
                first.add(key)
            claimed.append(claims_made)
        return claimed

    # ------------------------------------------------------------------ claims and updates
    async def claim(self, *, key: str, name: str, system: str, job_dir: str, owner: str) -> Claim:
        """Atomically find or create the job ``key``.

        A job in a :data:`REATTACH` state is returned as it is (not fresh), unless it is still
        ``created`` by a process that is gone, which this process then takes over. A job that
        failed, was processed or cleaned, or does not exist, is (re)created, fresh. Claims made
        by many coroutines at once share one transaction.
        """
        write = await self._submit(_Write(claims=[(key, name, system, job_dir, owner)]))
        return write.claimed[0]

    async def update_many(self, updates: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Apply ``(key, {column: value})`` updates in one transaction, all or nothing.

        :raises ValueError: an unknown column (nothing is applied)
        """
        checked = [(key, dict(values)) for key, values in updates]
        _check_columns(checked)  # unknown columns fail here, before anything is queued
        if checked:
            await self._submit(_Write(updates=checked))

    def update_soon(self, updates: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Queue updates for the writer without waiting for them (a failure is logged)."""
        checked = [(key, dict(values)) for key, values in updates]
        _check_columns(checked)
        if checked:
            self._queue(_Write(updates=checked))

    async def update(self, key: str, **values: Any) -> None:
        """Update one job; updates made by many coroutines at once share one transaction."""
        await self.update_many([(key, values)])

    def record_costs_soon(self, owner: str, started_at: float, counts: dict[str, Any]) -> None:
        """Queue what session ``owner``'s commands have cost so far (replacing its earlier figures)."""
        self._queue(_Write(costs=[(owner, started_at, json.dumps(counts, sort_keys=True))]))

    async def costs(self, owners: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The recorded costs of the sessions ``owners`` (a database without the table: none)."""
        wanted = sorted(set(owners))
        found: dict[str, dict[str, Any]] = {}
        await self._caught_up()
        for sql, part in _in_parts("SELECT owner, counts FROM costs WHERE owner IN ({marks})", wanted):
            try:
                async with self.conn.execute(sql, part) as cursor:
                    found.update((o, json.loads(c)) for o, c in await cursor.fetchall())
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                break
        return found

    # ------------------------------------------------------------------ measured times, chunk groupings
    def record_times_soon(self, operation: str, system: str, samples: Iterable[tuple[float, int]]) -> None:
        """Keep what chunks of ``operation`` took on ``system``: ``(seconds, configurations)`` per chunk
        (queued for the writer, not waited for: a failure is logged; :meth:`measured_times` sees them)."""
        now = time.time()
        rows = [(_INSERT_TIME, (operation, system, float(s), int(n), now)) for s, n in samples]
        if rows:
            self._queue(_Write(rows=rows))

    async def measured_times(self, operation: str, system: str, limit: int = 2000) -> list[tuple[float, int]]:
        """The latest ``(seconds, configurations)`` of ``operation``'s chunks on ``system``, newest first
        (none in a database an older version made, opened read-only)."""
        await self._caught_up()
        try:
            async with self.conn.execute(
                    "SELECT seconds, items FROM times WHERE operation = ? AND system = ? ORDER BY recorded_at DESC "
                    "LIMIT ?", (operation, system, limit)) as cursor:
                return [(float(s), int(n)) for s, n in await cursor.fetchall()]
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return []

    async def record_groups(self, call: str, groups: Iterable[tuple[int, int]]) -> None:
        """Keep how call ``call`` grouped its configurations: ``(first index, count)`` per chunk.

        Awaited before the chunk is claimed, so a rerun after any interruption groups them the same.
        """
        rows = [(_INSERT_GROUP, (call, first, count)) for first, count in groups]
        if rows:
            await self._submit(_Write(rows=rows))

    async def groups(self, call: str) -> list[tuple[int, int]]:
        """``(first index, count)`` of every chunk call ``call`` made in earlier runs, in index order."""
        async with self.conn.execute("SELECT first, count FROM groups WHERE call = ? ORDER BY first",
                                     (call,)) as cursor:
            return [(int(f), int(c)) for f, c in await cursor.fetchall()]

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self._submit(_Write(deletes=list(keys)))

    # ------------------------------------------------------------------ queries
    async def get(self, key: str) -> JobRecord | None:
        await self._caught_up()
        with _corruption_named(self.path):
            return await _fetch_one(self.conn, "SELECT * FROM jobs WHERE key = ?", (key,))

    async def get_many(self, keys: Sequence[str]) -> dict[str, JobRecord]:
        """The records of ``keys`` (those that exist), by key: one query per 500 keys."""
        records = map(JobRecord.from_row, await self._rows_in("SELECT * FROM jobs WHERE key IN ({marks})", keys))
        return {r.key: r for r in records}

    async def statuses(self, job_dirs: Sequence[str]) -> dict[str, JobStatus]:
        """The status of each job directory of ``job_dirs`` that has a record: one query per 500."""
        rows = await self._rows_in("SELECT job_dir, status FROM jobs WHERE job_dir IN ({marks})", job_dirs)
        return {job_dir: JobStatus(status) for job_dir, status in rows}

    async def _rows_in(self, sql: str, values: Sequence[str]) -> list[Any]:
        """The rows of ``sql`` (its ``{marks}`` the ``values``), after this process's queued writes."""
        await self._caught_up()
        rows: list[Any] = []
        with _corruption_named(self.path):
            for part_sql, part in _in_parts(sql, values):
                async with self.conn.execute(part_sql, part) as cursor:
                    rows.extend(await cursor.fetchall())
        return rows

    async def recent_timings(self, system: str, limit: int = 50) -> list[tuple[float, float, float | None]]:
        """(submitted_at, started_at, finished_at) of the ``limit`` jobs that started last on ``system``:
        its recent queue waits and throughput (placement over several systems)."""
        with _corruption_named(self.path):
            async with self.conn.execute(
                    "SELECT submitted_at, started_at, finished_at FROM jobs WHERE system = ? AND submitted_at IS "
                    "NOT NULL AND started_at IS NOT NULL ORDER BY started_at DESC LIMIT ?", (system, limit)) as cursor:
                return [(float(a), float(b), None if c is None else float(c)) for a, b, c in await cursor.fetchall()]

    async def select(self, *, status: Sequence[str] | None = None, system: str | None = None,
                     name: str | None = None) -> list[JobRecord]:
        """Jobs matching every given filter; ``name`` is a regular expression (Python ``re.search``)."""
        clauses: list[str] = []
        params: list[str] = []
        if status:
            clauses.append(f"status IN ({', '.join('?' * len(status))})")
            params.extend(status)
        if system:
            clauses.append("system = ?")
            params.append(system)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        await self._caught_up()
        with _corruption_named(self.path):
            async with self.conn.execute(f"SELECT * FROM jobs {where} ORDER BY created_at", params) as cursor:
                rows = [JobRecord.from_row(r) for r in await cursor.fetchall()]
        if name:
            pattern = re.compile(name)
            rows = [r for r in rows if pattern.search(r.name)]
        return rows


def _writer_connection(path: Path) -> sqlite3.Connection:
    """The writer's connection: used from the writer's thread only, one transaction at a time."""
    # short busy timeout: the writer task retries itself, logging why it waits
    conn = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
    conn.execute("PRAGMA synchronous=NORMAL")  # per connection (WAL: durable at each checkpoint)
    return conn


def _claim_all(conn: sqlite3.Connection, claims: Sequence[tuple[str, str, str, str, str]],
               now: float) -> dict[str, tuple[bool, JobStatus | None]]:
    """Claims inside the writer's transaction: key -> (fresh, status before).

    One look at all their keys and one insert of the new ones (a key claimed twice: claimed once).
    """
    wanted: dict[str, tuple[str, str, str, str, str]] = {}
    for claim in claims:
        wanted.setdefault(claim[0], claim)
    found = {key: (status, owner) for sql, part in _in_parts("SELECT key, status, owner FROM jobs WHERE key IN "
                                                             "({marks})", list(wanted))
             for key, status, owner in conn.execute(sql, part).fetchall()}
    conn.executemany("INSERT INTO jobs (key, name, system, status, job_dir, owner, created_at, updated_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [(key, name, system, JobStatus.CREATED.value, job_dir, owner, now, now)
                      for key, name, system, job_dir, owner in wanted.values() if key not in found])
    outcomes: dict[str, tuple[bool, JobStatus | None]] = {}
    for key, (_, name, system, job_dir, owner) in wanted.items():
        if key not in found:
            outcomes[key] = (True, None)
            continue
        previous, previous_owner = JobStatus(found[key][0]), found[key][1]
        outcomes[key] = (_take_over(conn, previous, previous_owner, key, name, system, job_dir, owner, now), previous)
    return outcomes


def _take_over(conn: sqlite3.Connection, previous: JobStatus, previous_owner: str | None, key: str, name: str,
               system: str, job_dir: str, owner: str, now: float) -> bool:
    """A claim of an existing job: True (fresh) when it is created afresh, False when it is re-attached to.

    A job in a :data:`REATTACH` state is re-attached to, unless it is still ``created`` by a process that is gone.
    """
    if previous in REATTACH and not (previous is JobStatus.CREATED and not owner_alive(previous_owner)):
        return False
    if previous is JobStatus.CREATED:
        log.info("job %s (%s): taking over its submission from %s, which is no longer running",
                 name, key[:12], previous_owner)
    conn.execute(
        "UPDATE jobs SET name = ?, system = ?, status = ?, job_dir = ?, owner = ?, remote_id = "
        "CASE WHEN status = 'created' THEN remote_id ELSE NULL END, "
        f"message = NULL, {', '.join(f'{c} = NULL' for c in TIMING_COLUMNS)}, updated_at = ? WHERE key = ?",
        (name, system, JobStatus.CREATED.value, job_dir, owner, now, key))
    return True


def _grouped(statements: list[tuple[str, tuple[Any, ...]]]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """Runs of statements with the same SQL, as ``executemany`` takes them (order kept)."""
    for sql, group in itertools.groupby(statements, key=lambda statement: statement[0]):
        yield sql, [params for _, params in group]


async def _fetch_one(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> JobRecord | None:
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return JobRecord.from_row(row) if row is not None else None


_IN_PART = 500
"""Values per ``IN (...)`` query: under sqlite's limit on bound parameters."""


def _in_parts(sql: str, values: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
    """``sql`` (``{marks}`` standing for the IN list's placeholders) with its values, :data:`_IN_PART` at a time."""
    for start in range(0, len(values), _IN_PART):
        part = list(values[start:start + _IN_PART])
        yield sql.format(marks=", ".join("?" * len(part))), part


def _select_keys(conn: sqlite3.Connection, keys: list[str]) -> list[JobRecord]:
    return [JobRecord.from_row(row) for sql, part in _in_parts("SELECT * FROM jobs WHERE key IN ({marks})", keys)
            for row in conn.execute(sql, part).fetchall()]


_COLUMN_SET = frozenset(_COLUMNS)
_DELETE = "DELETE FROM jobs WHERE key = ?"
_INSERT_COSTS = "INSERT OR REPLACE INTO costs (owner, started_at, updated_at, counts) VALUES (?, ?, ?, ?)"


def _check_columns(updates: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """:raises ValueError: an update names an unknown column"""
    for _, values in updates:
        if not _COLUMN_SET.issuperset(values):
            raise ValueError(f"unknown job columns {set(values) - _COLUMN_SET}")


@functools.lru_cache(maxsize=256)
def _update_sql(columns: tuple[str, ...], status: str | None) -> tuple[str, tuple[str, ...]]:
    """The UPDATE of ``columns`` (one SQL text per set of columns and status), and the statuses it keeps."""
    kept = tuple(sorted(s.value for s in KEPT_OVER.get(JobStatus(status), ()))) if status is not None else ()
    guard = f" AND status NOT IN ({', '.join('?' * len(kept))})" if kept else ""
    assignments = ", ".join(f"{column} = ?" for column in columns)
    return f"UPDATE jobs SET {assignments}, updated_at = ? WHERE key = ?{guard}", kept


def _update_statements(updates: Iterable[tuple[str, dict[str, Any]]],
                       now: float) -> list[tuple[str, tuple[Any, ...]]]:
    """SQL for ``(key, {column: value})`` updates.

    :raises ValueError: an unknown column
    """
    statements: list[tuple[str, tuple[Any, ...]]] = []
    for key, values in updates:
        values = {k: (v.value if isinstance(v, Enum) else v) for k, v in values.items()}
        if not _COLUMN_SET.issuperset(values):
            raise ValueError(f"unknown job columns {set(values) - _COLUMN_SET}")
        sql, kept = _update_sql(tuple(values), values.get("status"))
        statements.append((sql, (*values.values(), now, key, *kept)))
    return statements


_ADDED_TABLES = """
CREATE TABLE IF NOT EXISTS times (
    operation   TEXT NOT NULL,
    system      TEXT NOT NULL,
    seconds     REAL NOT NULL,
    items       INTEGER NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS times_operation ON times(operation, system, recorded_at);
CREATE TABLE IF NOT EXISTS groups (
    call        TEXT NOT NULL,
    first       INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (call, first)
);
"""
"""Tables added since the first schema: measured run times per operation and system (``pack="auto"``,
docs/self-tuning.md) and the grouping of a self-tuned call's configurations into chunks."""
_INSERT_TIME = "INSERT INTO times (operation, system, seconds, items, recorded_at) VALUES (?, ?, ?, ?, ?)"
_INSERT_GROUP = "INSERT OR IGNORE INTO groups (call, first, count) VALUES (?, ?, ?)"


async def _migrate(conn: aiosqlite.Connection) -> None:
    """Add the tables and columns a database made by an earlier version lacks, and fill them in for its jobs."""
    await conn.executescript(_ADDED_TABLES)
    async with conn.execute("PRAGMA table_info(jobs)") as cursor:
        present = {row[1] async for row in cursor}
    missing = [column for column in _ADDED_COLUMNS if column not in present]
    for column in missing:
        try:
            await conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {_COLUMN_TYPES.get(column, 'REAL')}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it meanwhile
                raise
    if "route" in missing:
        await conn.execute(_BACKFILL_ROUTE)
