"""A status command that fails transiently (a busy slurmctld) is asked again, then warned about: never a refusal.

The fault is a wrapper ``squeue`` first on a test-owned copy of the real ``slurm`` system's
PATH, failing its first calls with Slurm's own complaint (tests/helpers/faulty_scheduler.py).
"""

from __future__ import annotations

import logging
import operator
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.faulty_scheduler import faulty_system, status_calls
from wfl_async.doctor import check
from wfl_async.job import RemoteJob

from .test_doctor import doctor

pytestmark = pytest.mark.remote


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "faults"
    path.mkdir()
    yield path
    shutil.rmtree(path / "bin", ignore_errors=True)


def test_a_status_command_failing_once_is_asked_again_and_the_system_is_ok(fresh_expyre_root: Path,
                                                                         state: Path) -> None:
    system = faulty_system(fresh_expyre_root, state, status_fails='[ "$n" -le 1 ]')
    result = doctor(system)
    assert result.returncode == 0 and result.stdout.startswith(f"ok: system {system!r}"), result.stdout
    assert "warning" not in result.stdout and status_calls(state) == 2


def test_a_status_command_that_keeps_timing_out_is_a_warning_and_jobs_still_run(
        fresh_expyre_root: Path, state: Path, caplog: pytest.LogCaptureFixture) -> None:
    # fails for every try of the check, then answers: the check warns, the job is submitted and runs
    system = faulty_system(fresh_expyre_root, state, status_fails=f'[ "$n" -le {check.STATUS_TRIES} ]')
    result = doctor(system)
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert "transient" in line and "Socket timed out" in line and f"{check.STATUS_TRIES} times" in line
    assert not [line for line in result.stdout.splitlines() if line.startswith("error:")]

    (state / "status").unlink()  # the first submission's own check sees the same failures
    caplog.set_level(logging.WARNING, logger="wfl_async")
    job = RemoteJob(operator.add, (2, 3), sys_name=system, job_name="transient-status",
                    resources={"num_nodes": 1, "max_time": "5m"}, check_interval=0.5)
    assert job.run() == 5
    assert "Socket timed out" in caplog.text and status_calls(state) > check.STATUS_TRIES
