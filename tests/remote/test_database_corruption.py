"""A damaged jobs database, damaged the ways sqlite files are (issue 15): cut short, a page
overwritten, its ``-wal`` lost after the writer was killed.

Each case runs a real workflow on Slurm in a process of its own, damages the file, and checks
that the workflow and the CLI say ``DatabaseCorruptError`` with the file and ``wfl-async db
recover`` (never a raw sqlite traceback), that ``db recover`` keeps the damaged file and writes
a new one, and that the rerun then gives every result with each job run exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import remote_functions as rf

pytestmark = pytest.mark.remote

REPO = Path(__file__).resolve().parents[2]
JOBS = 40
SCRIPT = textwrap.dedent('''
    import json, sys
    import anyio
    from tests.helpers.remote_functions import big_result
    from wfl_async.job import RemoteJob
    from wfl_async.session import session_scope

    async def main():
        out = {}
        async with session_scope() as session:
            async def one(i):
                job = RemoteJob(big_result, (i, 100), sys_name="slurm", job_name=f"{sys.argv[2]} {i}",
                                resources={"num_nodes": 1, "max_time": "10m"}, check_interval=0.3,
                                env_vars=[f"WFL_TEST_RUN_LOG={sys.argv[3]}", f"WFL_TEST_SLEEP={sys.argv[4]}"])
                out[i] = (await job.prepare(session).result()).hex()
            async with anyio.create_task_group() as tg:
                for i in range(int(sys.argv[5])):
                    tg.start_soon(one, i)
        with open(sys.argv[1], "w") as f:
            json.dump(out, f)
    anyio.run(main)
''')


def _start(tmp_path: Path, tag: str, sleep: float) -> subprocess.Popen[str]:
    script = tmp_path / "workflow.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "out.json"), tag, str(tmp_path / "run.log"),
                             str(sleep), str(JOBS)], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wfl_async.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)


def _submitted(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM jobs WHERE status != 'created'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _truncate(db: Path) -> None:
    with open(db, "r+b") as handle:
        handle.truncate(os.path.getsize(db) // 2)


def _overwrite_page(db: Path) -> None:
    """Page 2 (the jobs table's root): sqlite still opens the file and counts through an index."""
    with open(db, "r+b") as handle:
        handle.seek(4096)
        handle.write(os.urandom(4096))


@pytest.mark.parametrize("damage", ["truncated", "overwritten page"])
def test_a_damaged_database_is_named_and_recovered_and_the_rerun_runs_each_job_once(
        damage: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    db = fresh_expyre_root / "wfl_async_jobs.db"
    tag = f"db{uuid.uuid4().hex[:6]}"
    first = _start(tmp_path, tag, 0)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    (tmp_path / "out.json").unlink()
    (_truncate if damage == "truncated" else _overwrite_page)(db)

    for command in (["ls"], ["status"], ["db", "unlock"]):
        answer = _cli(*command)
        assert "Traceback" not in answer.stderr, (command, answer.stderr)
        if command == ["db", "unlock"] and answer.returncode == 0:
            continue  # it read only what is intact (no job left 'created' through an index): nothing to say
        assert answer.returncode != 0, (command, answer.stdout)
        assert f"the jobs database {db} is damaged" in answer.stderr and "wfl-async db recover" in answer.stderr
    rerun = _start(tmp_path, tag, 0)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode != 0 and "DatabaseCorruptError" in err and "wfl-async db recover" in err, err[-3000:]
    assert "sqlite3.DatabaseError" not in err.splitlines()[-1]

    answer = _cli("db", "recover")
    assert answer.returncode == 0, answer.stderr
    print(f"\n{damage}: {answer.stdout}")
    assert list(fresh_expyre_root.glob("wfl_async_jobs.db.broken-*")), "the damaged file was not kept"
    assert _cli("db", "repair").returncode == 0

    _rerun_gives_every_result_once(tmp_path, tag)


def test_a_lost_wal_forgets_recent_jobs_and_the_rerun_re_attaches_to_them(fresh_expyre_root: Path,
                                                                          tmp_path: Path) -> None:
    db = fresh_expyre_root / "wfl_async_jobs.db"
    tag = f"wal{uuid.uuid4().hex[:6]}"
    # the jobs run long enough that the workflow is killed while it waits for them: a workflow that had
    # ended (or was closing its session) would have checkpointed its -wal into the database first
    first = _start(tmp_path, tag, 20)
    deadline = time.monotonic() + 300
    while _submitted(db) < JOBS and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _submitted(db) == JOBS, "the jobs were not submitted"
    assert first.poll() is None, "the workflow ended before it could be killed while waiting"
    wal = Path(f"{db}-wal")
    assert wal.exists() and wal.stat().st_size > 0
    first.send_signal(signal.SIGKILL)
    first.communicate()
    wal.unlink()
    Path(f"{db}-shm").unlink(missing_ok=True)

    # the recent jobs were in the lost -wal: the listing says so where the schema was there too (a
    # database made by this run's first connection), else it has no jobs, or (where a checkpoint had
    # copied them into the file first: seen once in CI, not reproduced here) the jobs as they were
    # then; it never fails
    listed = _cli("ls")
    assert "Traceback" not in listed.stderr and listed.returncode == 0, listed.stderr
    assert ("-wal file was lost" in listed.stderr or "no jobs match" in listed.stderr
            or tag in listed.stdout), (listed.stdout, listed.stderr)
    _rerun_gives_every_result_once(tmp_path, tag)


def _rerun_gives_every_result_once(tmp_path: Path, tag: str) -> None:
    """The workflow run again: every result right, and every job ran exactly once in all (its own log)."""
    rerun = _start(tmp_path, tag, 0)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out == {str(i): rf.big_result(i, 100).hex() for i in range(JOBS)}
    runs = sorted((tmp_path / "run.log").read_text().split(), key=int)
    assert runs == [str(i) for i in range(JOBS)], "a job ran twice, or never"
