"""The jobs database: atomic claims (also between processes), batched updates, filters, readers beside a writer."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers.processes import hold_sqlite_write_lock
from wfl_async.errors import DatabaseCorruptError
from wfl_async.jobs.database import (
    REATTACH,
    Claim,
    JobRecord,
    JobsDatabase,
    JobStatus,
)
from wfl_async.jobs.owner import owner_alive, process_owner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[JobsDatabase]:
    async with JobsDatabase(tmp_path / "stage" / "wfl_async_jobs.db") as database:
        yield database


def dead_owner() -> str:
    """The owner tag of a process of this host that has exited."""
    process = subprocess.Popen(["true"])
    process.wait()
    return f"{socket.gethostname()}:{process.pid}:deadbeef"


async def claim(db: JobsDatabase, key: str, owner: str = "", **kwargs: str) -> Claim:
    values = {"name": f"job {key}", "system": "slurm", "job_dir": f"job-{key}", **kwargs}
    return await db.claim(key=key, owner=owner or process_owner(), **values)


# ---------------------------------------------------------------- claims


async def test_claiming_a_new_key_is_fresh(db: JobsDatabase) -> None:
    owner = process_owner()
    result = await claim(db, "k1", owner)
    assert result.fresh and result.previous is None
    record = result.record
    assert (record.key, record.name, record.system, record.job_dir) == ("k1", "job k1", "slurm", "job-k1")
    assert record.status is JobStatus.CREATED and record.owner == owner and record.remote_id is None


async def test_claiming_again_in_the_same_process_is_not_fresh(db: JobsDatabase) -> None:
    owner = process_owner()
    assert (await claim(db, "k", owner)).fresh
    again = await claim(db, "k", owner)
    assert not again.fresh and again.previous is JobStatus.CREATED


@pytest.mark.parametrize("status", sorted(REATTACH - {JobStatus.CREATED}))
async def test_reattach_states_are_not_fresh_and_keep_their_record(db: JobsDatabase, status: JobStatus) -> None:
    await claim(db, "k")
    await db.update("k", status=status, remote_id="123", message="kept")
    result = await claim(db, "k", name="renamed")
    assert not result.fresh and result.previous is status
    assert result.record.status is status and result.record.remote_id == "123"
    assert result.record.message == "kept" and result.record.name == "job k"


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.PROCESSED, JobStatus.CLEANED])
async def test_failed_processed_and_cleaned_jobs_are_created_afresh(db: JobsDatabase, status: JobStatus) -> None:
    await claim(db, "k")
    await db.update("k", status=status, remote_id="123", message="it raised")
    new_owner = process_owner()
    result = await claim(db, "k", new_owner, name="new name", job_dir="new-dir")
    assert result.fresh and result.previous is status
    record = result.record
    assert record.status is JobStatus.CREATED and record.owner == new_owner
    assert record.remote_id is None and record.message is None
    assert (record.name, record.job_dir) == ("new name", "new-dir")


async def test_created_by_a_dead_owner_is_taken_over(db: JobsDatabase) -> None:
    await claim(db, "k", dead_owner())
    await db.update("k", remote_id="77")  # it may have submitted before dying: keep what it knew
    owner = process_owner()
    result = await claim(db, "k", owner)
    assert result.fresh and result.previous is JobStatus.CREATED
    assert result.record.owner == owner and result.record.remote_id == "77"


@pytest.mark.parametrize("owner", [process_owner(), "another-host.example:1:abcd1234"],
                         ids=["this_process", "another_host"])  # the same ids in every xdist worker
async def test_created_by_a_live_owner_is_not_fresh(db: JobsDatabase, owner: str) -> None:
    await claim(db, "k", owner)
    result = await claim(db, "k", process_owner())
    assert not result.fresh and result.previous is JobStatus.CREATED and result.record.owner == owner


def test_owner_alive() -> None:
    assert owner_alive(process_owner())
    assert not owner_alive(dead_owner())
    assert not owner_alive(None) and not owner_alive("")
    assert owner_alive("some-other-host:1:x")  # cannot tell: assume alive


CLAIMER = """
import anyio, json, sys, time
from pathlib import Path
from wfl_async.jobs.database import JobsDatabase
from wfl_async.jobs.owner import process_owner

path, go, n, me, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])

async def main():
    while not go.exists():
        time.sleep(0.001)  # start together, without the event loop being involved yet
    owner = process_owner()
    fresh = []
    async with JobsDatabase(path) as db:
        for i in range(n):
            result = await db.claim(key=f"key{i}", name="n", system="s", job_dir=f"d{i}", owner=owner)
            if result.fresh:
                fresh.append(i)
    # stay alive until every claimer is done: a "created" job of a process that has exited is
    # rightly taken over by the next claimer, which is not what this test is about
    (go.parent / f"done-{me}").touch()
    while len(list(go.parent.glob("done-*"))) < count:
        time.sleep(0.01)
    print(json.dumps(fresh))

anyio.run(main)
"""


async def test_concurrent_claims_from_several_processes_give_exactly_one_fresh_claim_per_key(tmp_path: Path) -> None:
    """Three scripts started at once on a database that does not exist yet (so they also race to create it)."""
    n, path, go = 300, tmp_path / "_expyre" / "wfl_async_jobs.db", tmp_path / "go"
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER)
    processes = [subprocess.Popen([sys.executable, str(script), str(path), str(go), str(n), str(i), "3"], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    await anyio.sleep(0.5)  # let them start; they spin until "go"
    go.touch()
    outputs = [await anyio.to_thread.run_sync(partial(p.communicate, timeout=120)) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    fresh = [set(json.loads(out)) for out, _ in outputs]
    assert sum(len(f) for f in fresh) == n, [len(f) for f in fresh]
    assert set().union(*fresh) == set(range(n))
    async with JobsDatabase(path, readonly=True) as db:
        records = await db.select()
    assert len(records) == n and {r.status for r in records} == {JobStatus.CREATED}


BATCH_CLAIMER = """
import anyio, json, sys, time
from pathlib import Path
from wfl_async.jobs.database import JobsDatabase
from wfl_async.jobs.owner import process_owner

path, go, n, me, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])

async def main():
    while not go.exists():
        time.sleep(0.001)
    owner = process_owner()
    fresh = []
    async with JobsDatabase(path) as db:
        async def one(i):
            if (await db.claim(key=f"key{i}", name="n", system="s", job_dir=f"d{i}", owner=owner)).fresh:
                fresh.append(i)
            await db.update(f"key{i}", message=me)  # an update behind each claim, as a submission records
        async with anyio.create_task_group() as tasks:  # every claim at once: they share transactions
            for i in range(n):
                tasks.start_soon(one, i)
    (go.parent / f"done-{me}").touch()
    while len(list(go.parent.glob("done-*"))) < count:
        time.sleep(0.01)
    print(json.dumps(fresh))

anyio.run(main)
"""


async def test_two_drivers_claiming_a_whole_call_at_once_in_batched_transactions_claim_each_job_once(
        tmp_path: Path) -> None:
    """Two processes each claim the same 2,000 jobs, all at once (the writer batches them, up to
    MAX_BATCH writes per transaction): each job is claimed fresh by exactly one of them."""
    n, path, go = 2000, tmp_path / "_expyre" / "wfl_async_jobs.db", tmp_path / "go"
    script = tmp_path / "batch_claimer.py"
    script.write_text(BATCH_CLAIMER)
    processes = [subprocess.Popen([sys.executable, str(script), str(path), str(go), str(n), str(i), "2"], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    await anyio.sleep(0.5)
    go.touch()
    outputs = [await anyio.to_thread.run_sync(partial(p.communicate, timeout=120)) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    fresh = [set(json.loads(out)) for out, _ in outputs]
    assert not fresh[0] & fresh[1] and fresh[0] | fresh[1] == set(range(n)), [len(f) for f in fresh]
    async with JobsDatabase(path, readonly=True) as db:
        records = await db.select()
    assert len(records) == n and {r.message for r in records} <= {"0", "1"}


async def test_concurrent_claims_in_one_process_give_one_fresh_claim(db: JobsDatabase) -> None:
    results: list[bool] = []

    async def one() -> None:
        results.append((await claim(db, "same")).fresh)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert sorted(results) == [False] * 19 + [True]


# ---------------------------------------------------------------- updates


async def test_update_many_applies_every_update_in_one_transaction(db: JobsDatabase) -> None:
    for key in ("a", "b", "c"):
        await claim(db, key)
    await db.update_many([("a", {"status": JobStatus.SUCCEEDED}), ("b", {"status": "died", "message": "gone"})])
    a, b, c = [await db.get(k) for k in ("a", "b", "c")]
    assert a is not None and b is not None and c is not None
    assert a.status is JobStatus.SUCCEEDED and b.status is JobStatus.DIED and b.message == "gone"
    assert c.status is JobStatus.CREATED
    assert a.updated_at == b.updated_at > c.updated_at


async def test_update_many_is_all_or_nothing(db: JobsDatabase) -> None:
    for key in ("a", "b"):
        await claim(db, key)
    with pytest.raises(sqlite3.IntegrityError):
        # the second update breaks NOT NULL after the first has run: the first must be rolled back
        await db.update_many([("a", {"status": JobStatus.SUCCEEDED}), ("b", {"name": None})])
    assert (await db.get("a")).status is JobStatus.CREATED  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown job columns"):
        await db.update_many([("a", {"status": JobStatus.SUCCEEDED}), ("b", {"no_such_column; --": 1})])
    assert (await db.get("a")).status is JobStatus.CREATED  # type: ignore[union-attr]
    # the connection is usable afterwards (no transaction left open)
    await db.update("a", status=JobStatus.SUBMITTED)
    assert (await db.get("a")).status is JobStatus.SUBMITTED  # type: ignore[union-attr]


def _count_transactions(db: JobsDatabase, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The writes of each transaction the writer makes from now on, in order."""
    made: list[int] = []
    real = db._transaction_in_thread

    def counted(batch: list[Any]) -> Any:
        made.append(len(batch))
        return real(batch)

    monkeypatch.setattr(db, "_transaction_in_thread", counted)
    return made


async def test_writes_nobody_waits_for_that_trickle_in_share_a_transaction_and_a_claim_ends_the_wait(
        db: JobsDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """Submissions recorded one by one as the scheduler names them (and a poll's changes) go in one
    transaction, not one each; a write someone waits for (a claim, a read catching up) is not held back."""
    for key in ("a", "b", "c"):
        await claim(db, key)
    made = _count_transactions(db, monkeypatch)
    for key in ("a", "b", "c"):
        db.update_soon([(key, {"status": JobStatus.SUBMITTED, "remote_id": f"id-{key}"})])
        await anyio.sleep(0.01)  # each comes on its own, as lines of a submit command's answer do
    fresh = await claim(db, "d")
    assert fresh.fresh and made == [4]  # the three updates, then the claim that ended the gathering
    records = [await db.get(k) for k in ("a", "b", "c")]
    assert [(r.status, r.remote_id) for r in records if r is not None] == [
        (JobStatus.SUBMITTED, f"id-{k}") for k in ("a", "b", "c")]


async def test_a_transactions_worth_of_unwaited_writes_is_not_held_for_the_gathering(
        db: JobsDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gathering ends once a full transaction's worth of writes nobody waits for is queued: they are
    applied then, not when the gathering time is up."""
    for key in ("a", "b", "c", "d"):
        await claim(db, key)
    monkeypatch.setattr("wfl_async.jobs.database.MAX_BATCH", 3)
    monkeypatch.setattr("wfl_async.jobs.database.UNWAITED_GATHER", 60.0)  # would outlast the test's timeout
    made = _count_transactions(db, monkeypatch)
    with anyio.fail_after(20):
        for key in ("a", "b", "c", "d"):
            db.update_soon([(key, {"status": JobStatus.STARTED})])
            await anyio.sleep(0.01)  # the first is taken alone; the writer then gathers
        while sum(made) < 3:
            await anyio.sleep(0.01)
    assert made[0] == 3  # the first write and the two that followed it: a full batch, not waited for
    statuses = [(await db.get(k)).status for k in ("a", "b", "c")]  # type: ignore[union-attr]
    assert statuses == [JobStatus.STARTED] * 3


async def test_writes_gathered_when_the_session_closes_are_still_applied(tmp_path: Path) -> None:
    path = tmp_path / "wfl_async_jobs.db"
    async with JobsDatabase(path) as db:
        await claim(db, "a")
        db.update_soon([("a", {"status": JobStatus.STARTED})])
        await anyio.sleep(0.01)  # taken by the writer, which is gathering more when it is cancelled
    async with JobsDatabase(path) as db:
        assert (await db.get("a")).status is JobStatus.STARTED  # type: ignore[union-attr]


async def test_update_many_with_nothing_to_do(db: JobsDatabase) -> None:
    await db.update_many([])
    assert await db.select() == []


async def test_delete(db: JobsDatabase) -> None:
    for key in ("a", "b", "c"):
        await claim(db, key)
    await db.delete(["a", "c"])
    assert [r.key for r in await db.select()] == ["b"]


# ---------------------------------------------------------------- queries


async def test_select_filters_combine(db: JobsDatabase) -> None:
    jobs = {"r1": ("relax_chunk_0", "slurm", JobStatus.SUBMITTED),
            "r2": ("relax_chunk_1", "sge", JobStatus.SUBMITTED),
            "r3": ("relax_chunk_2", "slurm", JobStatus.FAILED),
            "m1": ("md 'ü' $x", "slurm", JobStatus.SUBMITTED)}
    for key, (name, system, status) in jobs.items():
        await claim(db, key, name=name, system=system)
        await db.update(key, status=status)

    def keys(records: list[JobRecord]) -> list[str]:
        return [r.key for r in records]

    assert keys(await db.select()) == ["r1", "r2", "r3", "m1"]  # in creation order
    assert keys(await db.select(status=["submitted"])) == ["r1", "r2", "m1"]
    assert keys(await db.select(status=["failed", "submitted"], system="slurm")) == ["r1", "r3", "m1"]
    assert keys(await db.select(system="sge")) == ["r2"]
    assert keys(await db.select(name=r"chunk_[12]$")) == ["r2", "r3"]
    assert keys(await db.select(name=r"chunk_[12]$", system="slurm", status=["failed"])) == ["r3"]
    assert keys(await db.select(name="'ü' \\$x")) == ["m1"]
    # values are parameters, never SQL
    assert await db.select(system="slurm' OR '1'='1") == []
    assert await db.select(status=["submitted') OR ('1'='1"]) == []


async def test_readonly_connection_lists_while_another_holds_a_write_transaction(tmp_path: Path) -> None:
    path = tmp_path / "dir #1 ?x=y %20 ü" / "wfl_async_jobs.db"  # characters that mean something in URIs
    async with JobsDatabase(path) as writer:
        await claim(writer, "committed")
        await writer.conn.execute("BEGIN IMMEDIATE")
        await writer.conn.execute(
            "INSERT INTO jobs (key, name, system, status, job_dir, created_at, updated_at) "
            "VALUES ('uncommitted', 'n', 's', 'created', 'd', 0, 0)")
        try:
            with anyio.fail_after(5):
                async with JobsDatabase(path, readonly=True) as reader:
                    assert [r.key for r in await reader.select()] == ["committed"]
                    with pytest.raises(sqlite3.OperationalError, match="readonly"):
                        await reader.conn.execute("DELETE FROM jobs")
        finally:
            await writer.conn.execute("ROLLBACK")


async def test_readonly_connection_after_the_writer_closed(tmp_path: Path) -> None:
    path = tmp_path / "wfl_async_jobs.db"
    async with JobsDatabase(path) as writer:
        await claim(writer, "k")
    async with JobsDatabase(path, readonly=True) as reader:
        assert [r.key for r in await reader.select()] == ["k"]


async def test_database_file_is_a_debugging_tool(db: JobsDatabase) -> None:
    """Statuses are readable strings for ``sqlite3 wfl_async_jobs.db``; the file is in WAL mode."""
    await claim(db, "k")
    await db.update("k", status=JobStatus.SUBMITTED)
    with sqlite3.connect(db.path) as plain:
        assert plain.execute("SELECT status FROM jobs").fetchall() == [("submitted",)]
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_use_outside_async_with_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        _ = JobsDatabase(tmp_path / "x.db").conn


def test_claim_timestamps_are_recent(tmp_path: Path) -> None:
    async def main() -> float:
        async with JobsDatabase(tmp_path / "db") as db:
            return (await claim(db, "k")).record.created_at

    assert abs(anyio.run(main) - time.time()) < 60


async def test_a_cancelled_writer_fails_no_other_write(db: JobsDatabase) -> None:
    claims: dict[str, Claim] = {}

    async def one(key: str, scope: anyio.CancelScope) -> None:
        with scope:
            claims[key] = await claim(db, key)

    scopes = {f"c{i}": anyio.CancelScope() for i in range(20)}
    async with anyio.create_task_group() as tg:
        for key, scope in scopes.items():
            tg.start_soon(one, key, scope)
        await anyio.lowlevel.checkpoint()
        scopes["c0"].cancel()
    assert set(claims) >= {f"c{i}" for i in range(1, 20)}
    assert all(c.fresh for c in claims.values())
    assert len(await db.select()) == 20  # the cancelled caller's claim was applied all the same




async def test_another_process_holding_the_write_lock_delays_writes_and_reads_go_on(db: JobsDatabase) -> None:
    await claim(db, "before")
    # longer than sqlite's busy timeout used to be (60 s): the write waits, it does not fail
    holder = hold_sqlite_write_lock(db.path, 65)
    try:
        async with anyio.create_task_group() as tg, JobsDatabase(db.path, readonly=True) as reader:
            tg.start_soon(partial(db.update, "before", status=JobStatus.SUBMITTED, remote_id="7"))
            for _ in range(3):
                await anyio.sleep(1)
                # readers ('wfl-async ls') are not blocked by the other process's writer
                (record,) = await reader.select()
                assert record.status is JobStatus.CREATED
            # this process's own read waits for its own queued write: it sees what it wrote
            (record,) = await db.select()
            assert record.status is JobStatus.SUBMITTED
        assert holder.wait(timeout=30) == 0  # the write waited for the holder's commit (its exit may lag)
    finally:
        holder.kill()
        holder.wait()
    record = await db.get("before")
    assert record is not None and record.status is JobStatus.SUBMITTED and record.remote_id == "7"


async def test_a_corrupt_database_says_how_to_recover(tmp_path: Path) -> None:
    path = tmp_path / "wfl_async_jobs.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DatabaseCorruptError, match=r"jobs database .*wfl_async_jobs.db is damaged.*'wfl-async db recover'"):
        async with JobsDatabase(path):
            pass


async def test_a_cancelled_job_stays_cancelled_when_a_poll_sees_it_started_or_gone(db: JobsDatabase) -> None:
    await claim(db, "k1")
    await db.update("k1", status=JobStatus.CANCELLED, message="cancelled by user")
    await db.update("k1", status=JobStatus.STARTED)  # its started marker, written before the cancel
    await db.update("k1", status=JobStatus.DIED, message="left the queue")
    record = await db.get("k1")
    assert record is not None and record.status is JobStatus.CANCELLED and record.message == "cancelled by user"
    await db.update("k1", status=JobStatus.SUCCEEDED)  # a final marker: it did finish before the cancel
    record = await db.get("k1")
    assert record is not None and record.status is JobStatus.SUCCEEDED


async def test_an_older_database_gains_the_timing_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE jobs (key TEXT PRIMARY KEY, name TEXT NOT NULL, system TEXT NOT NULL, status TEXT "
                     "NOT NULL, job_dir TEXT NOT NULL, remote_root TEXT, remote_id TEXT, owner TEXT, created_at REAL "
                     "NOT NULL, updated_at REAL NOT NULL, message TEXT)")
        conn.execute("INSERT INTO jobs VALUES ('k', 'n', 's', 'succeeded', 'd', NULL, NULL, NULL, 1, 2, NULL)")
    async with JobsDatabase(path, readonly=True) as old:  # read as it is: the new fields are None
        record = await old.get("k")
        assert record is not None and record.started_at is None and record.worker is None
    async with JobsDatabase(path) as db:
        await db.update("k", started_at=5.0, worker="node1")
        record = await db.get("k")
        assert record is not None and record.started_at == 5.0 and record.worker == "node1"
        assert await db.costs(["nobody"]) == {}
async def test_a_damaged_table_page_is_named_on_the_first_query_that_reads_it(tmp_path: Path) -> None:
    """The file opens and counts through an index; the query reading the table names the damage."""
    path = tmp_path / "wfl_async_jobs.db"
    async with JobsDatabase(path) as db:
        await db.claim(key="k" * 64, name="one", system="local", job_dir="d", owner="o")
    with open(path, "r+b") as handle:  # page 2: the jobs table's root
        handle.seek(4096)
        handle.write(b"\xde\xad" * 2048)
    async with JobsDatabase(path, readonly=True) as db:
        with pytest.raises(DatabaseCorruptError, match="is damaged"):
            await db.select()
        with pytest.raises(DatabaseCorruptError, match="is damaged"):
            await db.get("k" * 64)
_FIRST_SCHEMA = """
CREATE TABLE jobs (key TEXT PRIMARY KEY, name TEXT NOT NULL, system TEXT NOT NULL, status TEXT NOT NULL,
                   job_dir TEXT NOT NULL, remote_root TEXT, remote_id TEXT, owner TEXT,
                   created_at REAL NOT NULL, updated_at REAL NOT NULL, message TEXT);
"""


async def test_a_database_of_an_earlier_version_gets_each_jobs_route(tmp_path: Path) -> None:
    from wfl_async.jobs.route import RouteKind
    from wfl_async.pack.queue import chunk_remote_id

    path = tmp_path / "wfl_async_jobs.db"
    with sqlite3.connect(path) as old:  # as the version before routes were recorded left it
        old.executescript(_FIRST_SCHEMA)
        rows = [("packed", "submitted", chunk_remote_id("0123abcd", "calc_chunk_0-k1")),
                ("direct", "succeeded", "4242"), ("new", "created", None)]
        old.executemany("INSERT INTO jobs VALUES (?, ?, 'hpc', ?, ?, '/root', ?, NULL, 0, 0, NULL)",
                        [(key, key, status, f"dir-{key}", remote_id) for key, status, remote_id in rows])
    async with JobsDatabase(path, readonly=True) as db:  # read only: read as it is, no route known
        assert {r.key: r.route for r in await db.select()} == {"packed": None, "direct": None, "new": None}
    async with JobsDatabase(path) as db:
        records = {r.key: r for r in await db.select()}
        assert (records["packed"].route, records["packed"].pack_id) == (RouteKind.PACKED, "0123abcd")
        assert (records["direct"].route, records["direct"].pack_id) == (RouteKind.DIRECT, None)
        assert records["new"].route is None and records["packed"].status is JobStatus.SUBMITTED
        await db.update("new", status=JobStatus.SUBMITTED, remote_id="7", route=RouteKind.ARRAY)
        assert (await db.get("new")).route is RouteKind.ARRAY  # type: ignore[union-attr]
    async with JobsDatabase(path) as db:  # opened again: migrated once, nothing changes
        assert {r.key: r.route for r in await db.select()} == {
            "packed": RouteKind.PACKED, "direct": RouteKind.DIRECT, "new": RouteKind.ARRAY}
