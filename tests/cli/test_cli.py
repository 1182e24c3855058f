"""``wfl-async`` through click's CliRunner, against the real test systems and a real jobs database.

Jobs are created with :class:`RemoteJob` on Slurm, SGE, PBS-style commands and the local
scheduler, directly and through the sshd. A missing daemon makes these tests fail, not skip
(start them with ``scripts/testinfra/start_all.sh``; ``source /tmp/wfl_async_testinfra/env.sh``).

Each command and each job runs on its own event loop in a worker thread, as a real command
would run in its own process: nothing here shares the test process's event loop or its wfl_async session.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result

from tests.helpers import remote_functions as rf
from wfl_async.cli import main
from wfl_async.errors import JobTimeoutError
from wfl_async.job import RemoteJob
from wfl_async.jobs import layout
from wfl_async.jobs.database import JobsDatabase
from wfl_async.jobs.fetched import FetchedStore
from wfl_async.jobs.states import ACTIVE_STATES
from wfl_async.session import DB_NAME, session_scope

pytestmark = pytest.mark.remote

SYSTEMS = ["local", "slurm", "slurm_ssh", "sge_ssh", "pbs"]
"""Every scheduler, locally and through ssh, without running everything everywhere."""
RESOURCES = {"num_nodes": 1, "max_time": "10m"}


# ---------------------------------------------------------------------- helpers
def in_thread(func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func`` in a fresh thread (its own event loop if it starts one) and return its value."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(func, *args).result(timeout=300)


def cli(*args: str, input: str | None = None) -> Result:
    return in_thread(lambda: CliRunner().invoke(main, list(args), input=input, catch_exceptions=False))


def cli_json(*args: str) -> list[dict[str, Any]]:
    result = cli("ls", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def make_job(system: str, name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> RemoteJob:
    return RemoteJob(function, args, sys_name=system, job_name=name, resources=RESOURCES, check_interval=0.3,
                     **kwargs)


def run_job(job: RemoteJob) -> Any:
    return in_thread(anyio.run, job.aio)


def submit(job: RemoteJob) -> None:
    """Submit ``job`` and stop waiting for it at once (it stays queued, as after Ctrl-C)."""
    job.timeout = 0.01
    with pytest.raises(JobTimeoutError):
        run_job(job)


def queue_states(system: str) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        async with session_scope() as session:
            return dict(await session.system(system).queue_states())
    return in_thread(anyio.run, ask)


def remote_dir_exists(system: str, path: str) -> bool:
    async def ask() -> bool:
        async with session_scope() as session:
            result = await session.system(system).transport.run(f"test -d {shlex.quote(path)}", check=False)
            return result.returncode == 0
    return in_thread(anyio.run, ask)


def wait_until_gone(system: str, remote_ids: list[str], deadline: float = 60) -> bool:
    """Whether the jobs leave the real queue (SGE lists a deleted job as ``dr`` for a while)."""
    end = time.monotonic() + deadline
    while any(queue_states(system).get(i) in ACTIVE_STATES for i in remote_ids):
        if time.monotonic() > end:
            return False
        time.sleep(0.5)
    return True


def by_name(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in records}


def sync_until(predicate: Callable[[dict[str, dict[str, Any]]], bool], *args: str,
               deadline: float = 120) -> dict[str, dict[str, Any]]:
    """Run ``wfl-async sync`` until the listed jobs satisfy ``predicate`` (the jobs run on a real queue)."""
    end = time.monotonic() + deadline
    while True:
        result = cli("sync", *args)
        assert result.exit_code == 0, result.output
        jobs = by_name(cli_json(*args))
        if predicate(jobs) or time.monotonic() > end:
            return jobs
        time.sleep(1)


@pytest.fixture
def root(fresh_expyre_root: Path) -> Iterator[Path]:
    """A private project (config + empty jobs database); leftover unfinished jobs are cancelled."""
    config = json.loads((fresh_expyre_root / "config.json").read_text())
    missing = [s for s in SYSTEMS if s != "local" and s not in config["systems"]]
    if missing:
        pytest.fail(f"systems {missing} are not configured: run scripts/testinfra/start_all.sh and "
                    f"source /tmp/wfl_async_testinfra/env.sh before pytest")
    yield fresh_expyre_root
    if (fresh_expyre_root / DB_NAME).exists():
        cli("cancel", "--yes")


def token() -> str:
    return uuid.uuid4().hex[:6]


# ---------------------------------------------------------------------- ls
def test_ls_lists_and_filters_real_jobs(root: Path) -> None:
    t = token()
    assert run_job(make_job("slurm", f"alpha-{t}", rf.sleep_then_return, 0, 1)) == 1
    assert run_job(make_job("local", f"beta-{t}", rf.sleep_then_return, 0, 2)) == 2
    with pytest.raises(rf.CustomRemoteError):
        run_job(make_job("sge_ssh", f"gamma-{t}", rf.raise_custom, "on purpose"))

    every = by_name(cli_json())
    assert {n: r["status"] for n, r in every.items()} == {
        f"alpha-{t}": "succeeded", f"beta-{t}": "succeeded", f"gamma-{t}": "failed"}
    assert [r["name"] for r in cli_json("--system", "slurm")] == [f"alpha-{t}"]
    assert [r["name"] for r in cli_json("-n", "(beta|gamma)-.*")] == [f"beta-{t}", f"gamma-{t}"]
    assert [r["name"] for r in cli_json("-s", "failed")] == [f"gamma-{t}"]
    assert len(cli_json("-s", "finished")) == 3
    assert cli_json("-s", "unfinished") == []
    alpha_key = every[f"alpha-{t}"]["key"]
    assert [r["name"] for r in cli_json("-i", alpha_key[:10])] == [f"alpha-{t}"]

    table = cli("list", "-S", "slurm", "--long")  # the alias, and the long columns
    assert table.exit_code == 0
    assert f"alpha-{t}" in table.stdout and alpha_key in table.stdout
    assert every[f"alpha-{t}"]["remote_root"] in table.stdout

    bad = cli("ls", "-s", "finsihed")
    assert bad.exit_code == 2 and "'finsihed' is not a job status" in bad.output and "finished" in bad.output
    bad = cli("ls", "-n", "beta[")
    assert bad.exit_code == 2 and "not a valid regular expression" in bad.output


def test_ls_without_a_database_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPYRE_ROOT", str(tmp_path))
    result = cli("ls")
    assert result.exit_code == 0
    assert f"no jobs database at {tmp_path / DB_NAME}" in result.stderr and "EXPYRE_ROOT" in result.stderr
    assert not (tmp_path / DB_NAME).exists()  # reading never creates it


_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE jobs SET name = 'uncommitted'")
print("locked", flush=True)
time.sleep(120)
"""


def test_ls_and_status_work_while_a_writer_holds_the_lock(root: Path) -> None:
    t = token()
    run_job(make_job("slurm", f"held-{t}", rf.sleep_then_return, 0, "x"))
    writer = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(root / DB_NAME)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
        start = time.monotonic()
        assert [r["name"] for r in cli_json()] == [f"held-{t}"]  # committed state, not the open transaction
        status = cli("status")
        assert status.exit_code == 0 and "slurm" in status.stdout
        assert time.monotonic() - start < 10  # never waited for the 60 s busy timeout
        # unlock must not break a live writer's lock: it names the process instead
        refused = cli("db", "unlock", "--timeout", "0.5")
        assert refused.exit_code == 1
        assert "write lock" in refused.stderr and f"pid {writer.pid}" in refused.stderr
        assert "kill PID" in refused.stderr
    finally:
        writer.kill()
        writer.wait()
    assert [r["name"] for r in cli_json()] == [f"held-{t}"]


def test_status_counts_per_system_and_refreshes(root: Path) -> None:
    t = token()
    run_job(make_job("slurm", f"count-{t}", rf.sleep_then_return, 0, 1))
    run_job(make_job("pbs", f"count2-{t}", rf.sleep_then_return, 0, 2))
    once = cli("status")
    assert once.exit_code == 0
    lines = {line.split()[0]: line.split() for line in once.stdout.splitlines() if line.strip()}
    header = lines["SYSTEM"]
    assert lines["slurm"][header.index("DONE")] == "1" and lines["all"][header.index("TOTAL")] == "2"
    watched = cli("status", "--watch", "0.1", "--count", "3")
    assert watched.exit_code == 0 and watched.stdout.count("SYSTEM") == 3


# ---------------------------------------------------------------------- sync
@pytest.mark.parametrize("system", SYSTEMS)
def test_sync_records_succeeded_failed_and_died_jobs(root: Path, system: str) -> None:
    t = token()
    finisher = make_job(system, f"finish-{t}", rf.sleep_then_return, 2, f"value-{t}")
    submit(finisher)
    submit(make_job(system, f"fail-{t}", rf.raise_custom, "boom"))
    submit(make_job(system, f"victim-{t}", rf.sleep_then_return, 300, None))
    jobs = by_name(cli_json("-n", f".*-{t}"))
    assert {r["status"] for r in jobs.values()} <= {"submitted", "started"}

    # still queued or running: sync leaves them so
    assert cli("sync", "-n", f"victim-{t}").exit_code == 0
    assert cli_json("-n", f"victim-{t}")[0]["status"] in ("submitted", "started")

    # killed behind wfl_async's back: gone from the queue without a marker
    victim_id = jobs[f"victim-{t}"]["remote_id"]

    async def kill() -> None:
        async with session_scope() as session:
            await session.system(system).control("cancel", [victim_id])
    in_thread(anyio.run, kill)

    jobs = sync_until(lambda j: j[f"finish-{t}"]["status"] == "succeeded" and j[f"fail-{t}"]["status"] == "failed"
                      and j[f"victim-{t}"]["status"] == "died", "-n", f".*-{t}")
    assert {n: r["status"] for n, r in jobs.items()} == {
        f"finish-{t}": "succeeded", f"fail-{t}": "failed", f"victim-{t}": "died"}
    assert "left the queue" in jobs[f"victim-{t}"]["message"]
    # when and where the finished ones ran, from their fetched markers (for wfl-async report)
    for name in (f"finish-{t}", f"fail-{t}"):
        assert jobs[name]["started_at"] <= jobs[name]["finished_at"] <= jobs[name]["fetched_at"] and jobs[name]["worker"]
    assert "CustomRemoteError: boom" in jobs[f"fail-{t}"]["message"]
    # the finished jobs' files came back into the stage directory, as the poller would fetch them
    stage = root / "wfl_async_stage"
    assert (stage / jobs[f"finish-{t}"]["job_dir"] / layout.RESULT).is_file()
    assert (stage / jobs[f"fail-{t}"]["job_dir"] / layout.WORKER_LOG).is_file()
    # so a rerun returns the value without waiting on the system
    finisher.timeout = 5
    assert run_job(finisher) == f"value-{t}"


# ---------------------------------------------------------------------- cancel
@pytest.mark.parametrize("system", SYSTEMS)
def test_cancel_removes_jobs_from_the_real_queue(root: Path, system: str) -> None:
    t = token()
    for i in range(2):
        submit(make_job(system, f"sleeper{i}-{t}", rf.sleep_then_return, 300, i))
    submit(make_job("slurm", f"bystander-{t}", rf.sleep_then_return, 300, 0))
    ids = [r["remote_id"] for r in cli_json("-n", f"sleeper.-{t}")]
    states = queue_states(system)
    assert all(states.get(i) in ACTIVE_STATES for i in ids)

    result = cli("cancel", "-S", system, "-n", f"sleeper.-{t}")
    assert result.exit_code == 0, result.output
    assert "cancel: 2 job(s) looked at; 2 cancelled" in result.stdout
    jobs = by_name(cli_json("-n", f".*-{t}"))
    for i in range(2):
        assert jobs[f"sleeper{i}-{t}"]["status"] == "cancelled"
        assert jobs[f"sleeper{i}-{t}"]["message"] == "cancelled by user"
    assert jobs[f"bystander-{t}"]["status"] in ("submitted", "started")
    assert wait_until_gone(system, ids)

    # no filter: asks first, and "no" cancels nothing
    refused = cli("cancel", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert cli_json("-n", f"bystander-{t}")[0]["status"] in ("submitted", "started")


# ---------------------------------------------------------------------- clean / rm
@pytest.mark.parametrize("system", ["slurm_ssh", "local"])
def test_clean_removes_local_and_remote_directories(root: Path, system: str) -> None:
    t = token()
    kept = make_job(system, f"kept-{t}", rf.sleep_then_return, 0, "kept")
    gone = make_job(system, f"gone-{t}", rf.sleep_then_return, 0, "gone")
    assert run_job(kept) == "kept" and run_job(gone) == "gone"
    submit(make_job("slurm", f"running-{t}", rf.sleep_then_return, 300, 0))
    jobs = by_name(cli_json("-n", f".*-{t}"))
    remote = {n: f"{r['remote_root']}/{r['job_dir']}" for n, r in jobs.items()}
    stage = root / "wfl_async_stage"

    def local_copy(name: str) -> bool:  # its fetched files: its own directory, or a fetched bundle
        return FetchedStore(stage).files(jobs[name]["job_dir"]) is not None

    assert remote_dir_exists(system, remote[f"gone-{t}"]) and local_copy(f"gone-{t}")

    # --no-remote: only the local copy goes, the status stays, a rerun fetches the result again
    result = cli("clean", "-n", f"kept-{t}", "--no-remote")
    assert result.exit_code == 0, result.output
    assert not local_copy(f"kept-{t}") and remote_dir_exists(system, remote[f"kept-{t}"])
    assert cli_json("-n", f"kept-{t}")[0]["status"] == "succeeded"
    assert run_job(kept) == "kept"

    result = cli("clean", "-n", f".*-{t}")
    assert result.exit_code == 0, result.output
    jobs = by_name(cli_json("-n", f".*-{t}"))
    for name in (f"kept-{t}", f"gone-{t}"):
        assert jobs[name]["status"] == "cleaned"
        assert not remote_dir_exists(system, remote[name])
        assert not local_copy(name)
    assert jobs[f"running-{t}"]["status"] in ("submitted", "started")  # unfinished: untouched
    assert remote_dir_exists("slurm", remote[f"running-{t}"])


def test_rm_refuses_unfinished_jobs_unless_forced(root: Path) -> None:
    t = token()
    run_job(make_job("slurm", f"done-{t}", rf.sleep_then_return, 0, 1))
    submit(make_job("sge_ssh", f"busy-{t}", rf.sleep_then_return, 300, 0))
    jobs = by_name(cli_json("-n", f".*-{t}"))
    busy_id = jobs[f"busy-{t}"]["remote_id"]

    refused = cli("rm", "-n", f".*-{t}", "--yes")
    assert refused.exit_code == 1
    assert f"busy-{t} (submitted)" in refused.stderr or f"busy-{t} (started)" in refused.stderr
    assert "--force" in refused.stderr
    assert len(cli_json("-n", f".*-{t}")) == 2

    declined = cli("remove", "-n", f"done-{t}", input="n\n")  # the alias; asks first
    assert declined.exit_code == 1 and len(cli_json("-n", f".*-{t}")) == 2
    accepted = cli("remove", "-n", f"done-{t}", input="y\n")
    assert accepted.exit_code == 0 and "removed 1 of 1" in accepted.stdout
    assert not remote_dir_exists("slurm", f"{jobs[f'done-{t}']['remote_root']}/{jobs[f'done-{t}']['job_dir']}")

    forced = cli("rm", "-n", f".*-{t}", "--yes", "--force")
    assert forced.exit_code == 0, forced.output
    assert cli_json("-n", f".*-{t}") == []
    assert wait_until_gone("sge_ssh", [busy_id])


# ---------------------------------------------------------------------- db
def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_db_unlock_after_a_killed_writer_releases_its_claims(root: Path) -> None:
    t = token()
    run_job(make_job("slurm", f"ok-{t}", rf.sleep_then_return, 0, 1))
    db_path = root / DB_NAME

    async def claim() -> None:
        async with JobsDatabase(db_path) as db:
            here = socket.gethostname()
            await db.claim(key=f"dead-{t}", name=f"dead-{t}", system="slurm", job_dir=f"dead-{t}",
                           owner=f"{here}:{_dead_pid()}:deadbeef")
            await db.claim(key=f"far-{t}", name=f"far-{t}", system="slurm", job_dir=f"far-{t}",
                           owner="another-host:1:cafe")
    in_thread(anyio.run, claim)

    # a writer killed (SIGKILL) in the middle of a transaction
    killer = ("import os, signal, sqlite3, sys\n"
              "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "c.execute('BEGIN IMMEDIATE'); c.execute(\"UPDATE jobs SET status = 'failed'\")\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", killer, str(db_path)]).returncode == -signal.SIGKILL

    result = cli("db", "unlock")
    assert result.exit_code == 0, result.output
    assert "write lock: free" in result.stdout and "WAL checkpoint: done" in result.stdout
    assert "released 1 job(s)" in result.stdout and f"dead-{t}" in result.stdout
    assert f"far-{t}" in result.stdout and "--other-hosts" in result.stdout
    jobs = by_name(cli_json("-n", f".*-{t}"))
    assert jobs[f"ok-{t}"]["status"] == "succeeded"  # the killed transaction left nothing behind
    assert jobs[f"dead-{t}"]["owner"] is None and jobs[f"far-{t}"]["owner"] == "another-host:1:cafe"
    assert not Path(f"{db_path}-wal").exists() or Path(f"{db_path}-wal").stat().st_size == 0

    result = cli("db_unlock", "--other-hosts")  # xpr's spelling
    assert result.exit_code == 0 and "released 1 job(s)" in result.stdout
    assert by_name(cli_json("-n", f".*-{t}"))[f"far-{t}"]["owner"] is None


def test_db_repair_reports_ok_and_damage(root: Path) -> None:
    run_job(make_job("local", f"fine-{token()}", rf.sleep_then_return, 0, 1))
    ok = cli("db", "repair")
    assert ok.exit_code == 0 and "ok (1 jobs, integrity check passed)" in ok.stdout

    db_path = root / DB_NAME
    conn = sqlite3.connect(db_path)
    with conn:  # enough rows for many pages
        conn.executemany("INSERT INTO jobs (key, name, system, status, job_dir, created_at, updated_at) "
                         "VALUES (?, ?, 'local', 'succeeded', ?, 0, 0)",
                         [(f"k{i:05d}" * 8, f"n{i}", f"d{i}") for i in range(3000)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = db_path.stat().st_size
    with open(db_path, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(os.urandom(8192))
    damaged = cli("db", "repair")
    assert damaged.exit_code == 1
    assert "is damaged" in damaged.stderr and "wfl-async db recover" in damaged.stderr

    # the recovery it names works: the damaged pages' rows are skipped, every other row is kept
    recovered = cli("db", "recover")
    assert recovered.exit_code == 0, recovered.output
    kept = int(recovered.stdout.split("recovered ")[1].split()[0])
    assert 1000 < kept < 3001, recovered.stdout
    assert list(root.glob(f"{DB_NAME}.broken-*")), "the damaged file was not kept"
    assert cli("db", "repair").exit_code == 0
    assert len(cli_json()) == kept


def test_db_unlock_lists_many_released_jobs_as_a_wrapped_list(root: Path) -> None:
    t = token()
    names = [f"many-{t}-{i}" for i in range(80)]

    async def claim() -> None:
        async with JobsDatabase(root / DB_NAME) as db:
            dead = f"{socket.gethostname()}:{_dead_pid()}:deadbeef"
            for name in names:
                await db.claim(key=name, name=name, system="local", job_dir=name, owner=dead)
    in_thread(anyio.run, claim)
    result = cli("db", "unlock")
    assert result.exit_code == 0 and "released 80 job(s)" in result.stdout, result.output
    assert all(name in result.stdout for name in names)
    listed = [line for line in result.stdout.splitlines() if line.startswith("    many-")]
    assert len(listed) > 5 and max(len(line) for line in listed) <= 100, result.stdout  # a list, not one line


def test_ls_shows_job_names_as_plain_text(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # no width to fit: the name is shown whole
    t = token()
    hostile = f"[/] [bold]x[/bold] \x1b[31mred {t}"
    run_job(make_job("local", hostile, rf.sleep_then_return, 0, "x"))
    shown = cli("ls")
    assert shown.exit_code == 0, shown.stdout
    assert "[/] [bold]x[/bold]" in shown.stdout  # markup is not interpreted
    assert "\x1b" not in shown.stdout and "\\x1b[31mred" in shown.stdout  # the escape is made visible
