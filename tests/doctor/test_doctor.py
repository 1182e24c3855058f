"""``wfl-async doctor`` and the first-submission check, against the real daemons and sshd.

Each broken system is a test-owned config.json entry derived from a real one: the fault is in
what a user gets wrong (a Python without wfl_async, another numpy first on PYTHONPATH, a run
directory that cannot be written, an ssh config whose known_hosts lacks the host's key).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import remote_functions as rf
from wfl_async.errors import SystemNotReadyError
from wfl_async.job import RemoteJob

from .conftest import BASE

pytestmark = pytest.mark.remote


def doctor(*systems: str) -> subprocess.CompletedProcess[str]:
    """``wfl-async doctor`` in its own process, as a user runs it; its output is saved for the report."""
    result = subprocess.run([sys.executable, "-m", "wfl_async.cli", "doctor", *systems], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    out_dir = os.environ.get("WFL_ASYNC_DOCTOR_OUTPUT_DIR")
    if out_dir:
        Path(out_dir, f"doctor_{'_'.join(systems)}.txt").write_text(
            f"$ wfl-async doctor {' '.join(systems)}\n{result.stderr}{result.stdout}(exit status {result.returncode})\n")
    return result


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("error:")]


def test_healthy_system_is_ok(broken_root: Path) -> None:
    result = doctor(BASE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"ok: system {BASE!r}")
    assert "wfl_async" in result.stdout and "numpy" in result.stdout
    assert "1 ssh connection(s)" in result.stderr


def test_every_system_of_one_host_shares_one_connection(broken_root: Path) -> None:
    result = doctor(BASE, "numpy_mismatch", "readonly_rundir")
    assert "1 ssh connection(s)" in result.stderr


def test_remote_python_without_wfl_async(broken_root: Path) -> None:
    result = doctor("no_wfl_async")
    assert result.returncode == 1
    lines = error_lines(result)
    assert any("cannot import wfl_async" in line and "ModuleNotFoundError" in line and '"commands"' in line
               for line in lines), result.stdout


def test_numpy_major_mismatch(broken_root: Path) -> None:
    result = doctor("numpy_mismatch")
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "numpy 9.0.0 there" in line and "major" in line and "wfl-async install numpy_mismatch" in line


def test_unwritable_rundir(broken_root: Path) -> None:
    result = doctor("readonly_rundir")
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "'readonly_rundir'" in line and "readonly/run" in line and 'set "rundir"' in line


def test_unknown_host_key(broken_root: Path) -> None:
    result = doctor("unknown_host_key")
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "host key" in line and "not known" in line and "known_hosts" in line


@pytest.mark.parametrize("system", ["unreachable", "unreachable_openssh"])
def test_unreachable_host(broken_root: Path, system: str) -> None:
    result = doctor(system)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "nothing accepts ssh connections at wfl-async-test" in line and "Connection refused" in line.replace(
        "Connect call failed", "Connection refused") and "'ssh wfl-async-test true' must work" in line, line


def test_the_openssh_transport_is_checked_the_same_way(broken_root: Path) -> None:
    result = doctor("through_openssh")
    assert result.returncode == 0 and result.stdout.startswith("ok: system 'through_openssh'"), result.stdout


def test_unknown_system_name_is_a_clear_error(broken_root: Path) -> None:
    result = doctor("no_such_system")
    assert result.returncode == 1
    assert "no_such_system" in result.stderr


@pytest.mark.parametrize("system,expected", [("no_wfl_async", "cannot import wfl_async"),
                                             ("numpy_mismatch", "numpy 9.0.0 there"),
                                             ("readonly_rundir", 'set "rundir"'),
                                             ("unresolvable", "does not resolve to an address"),
                                             ("unreachable", "nothing accepts ssh connections"),
                                             ("unreachable_openssh", "nothing accepts ssh connections")])
def test_first_submission_fails_fast_with_the_doctor_message(broken_root: Path, system: str,
                                                             expected: str) -> None:
    """Nothing is submitted: the first job raises at once, and so does the second (cached)."""
    def job(i: int) -> RemoteJob:
        return RemoteJob(rf.sleep_then_return, (0, i), sys_name=system, job_name=f"doctor_{system}_{i}",
                         resources={"num_nodes": 1, "max_time": "5m"})

    started = time.monotonic()
    with pytest.raises(SystemNotReadyError) as info:
        job(1).run()
    assert time.monotonic() - started < 15, "a broken system must fail the call within seconds"
    assert expected in str(info.value) and "nothing was submitted" in str(info.value)
    with pytest.raises(SystemNotReadyError):
        job(2).run()
    with pytest.raises(SystemNotReadyError):  # the same job again: its claim was released, not left hanging
        job(1).run()
    import sqlite3

    with sqlite3.connect(broken_root / "wfl_async_jobs.db") as conn:
        rows = conn.execute("SELECT status, remote_id, message FROM jobs").fetchall()
    assert len(rows) == 2 and all(s == "not_submitted" and r is None and "cannot run jobs" in m for s, r, m in rows)


def test_ignore_failed_jobs_does_not_hide_a_system_that_cannot_run_jobs(broken_root: Path, tmp_path: Path) -> None:
    """ignore_failed_jobs is for jobs that fail: a system that cannot run any stops the call, and no
    output is written (an output of failed configurations would be complete, so a rerun after the
    fix would run nothing)."""
    from ase import Atoms

    from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo
    from wfl_async.configset import ConfigSet, OutputSpec

    info = RemoteInfo(sys_name="no_wfl_async", job_name="doctor_ignored", resources={"num_nodes": 1, "max_time": "5m"},
                      num_inputs_per_queued_job=1, ignore_failed_jobs=True)
    with pytest.raises(SystemNotReadyError, match="cannot import wfl_async"):
        rf.label_or_raise(ConfigSet([Atoms("H", info={"i": i}) for i in range(3)]), OutputSpec(tmp_path / "out.xyz"),
                          autopara_info=AutoparaInfo(remote_info=info))
    assert not (tmp_path / "out.xyz").exists()


def test_every_test_system_is_healthy(remote_system: str, expyre_root: Path) -> None:
    """The real systems of the test set-up pass every check (so the first-submission check lets them run)."""
    result = doctor(remote_system)
    assert result.returncode == 0 and result.stdout.startswith(f"ok: system {remote_system!r}"), result.stdout


def test_reattaching_to_finished_jobs_runs_no_check(broken_root: Path) -> None:
    """The check belongs to submission: a rerun whose jobs are all done contacts no system."""
    import anyio

    from wfl_async.session import session_scope

    job = RemoteJob(rf.sleep_then_return, (0, "reattach"), sys_name=BASE, job_name="doctor_reattach",
                    resources={"num_nodes": 1, "max_time": "5m"}, check_interval=0.5)

    async def one_session() -> tuple[object, dict[str, int]]:
        async with session_scope() as session:
            value = await job.aio()
            return value, dict(session.system(BASE).transport.stats.by_kind())

    def in_new_loop() -> tuple[object, dict[str, int]]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:  # each its own event loop, hence its own session
            return pool.submit(anyio.run, one_session).result(timeout=300)

    value, first = in_new_loop()
    assert value == "reattach" and first["probe"] >= 1 and first["submit"] == 1
    value, again = in_new_loop()
    assert value == "reattach" and again == {}
