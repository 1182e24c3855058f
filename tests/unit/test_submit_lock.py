"""Whose submit lock is it: the submit command's own rule, run by the shell of the local transport
(``/bin/sh``) with a stand-in submit program that logs each call.

A lock without an answer is a submission in progress while its holder (named in the lock: host,
pid, start time) lives on this host, or, for a holder on another host or a lock naming none, while
the lock is younger than ``IN_PROGRESS_MINUTES``; otherwise it is unresolved (the driver looks for
the job before submitting again). Never is a locked job submitted by the command itself.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wfl_async.jobs import layout
from wfl_async.scheduler import Scheduler, SlurmScheduler
from wfl_async.scheduler.submit_lock import IN_PROGRESS, IN_PROGRESS_MINUTES

HOST = os.uname().nodename


def run(command: str, cwd: Path) -> str:
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=True, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin"}).stdout


def start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[19]


@pytest.fixture
def sched(tmp_path: Path) -> Scheduler:
    fake = tmp_path / "fake_sbatch"
    fake.write_text(f'#!/bin/sh\necho "$PWD" >> {tmp_path}/calls\necho "Submitted batch job 4242"\n')
    fake.chmod(0o755)
    scheduler = SlurmScheduler()
    scheduler.submit_program = str(fake)  # type: ignore[misc]  # an instance's own stand-in
    return scheduler


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    d = tmp_path / "job"
    d.mkdir()
    return d


@pytest.fixture
def live() -> Iterator[int]:
    """A live process of this host (what a submission still running looks like)."""
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


def lock(d: Path, text: str, age_minutes: float = 0) -> None:
    path = d / layout.SUBMIT_LOCK
    path.write_text(text)
    when = time.time() - 60 * age_minutes
    os.utime(path, (when, when))


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().split() if path.exists() else []


def test_a_submission_names_its_process_in_the_lock_and_a_repeat_reuses_its_answer(
        sched: Scheduler, job_dir: Path, tmp_path: Path) -> None:
    command = sched.submit_command([str(job_dir)])
    assert sched.parse_submit_output(run(command, tmp_path), 1)[0].remote_id == "4242"
    host, pid, start = (job_dir / layout.SUBMIT_LOCK).read_text().split()
    assert host == HOST and int(pid) > 0 and int(start) > 0
    assert sched.parse_submit_output(run(command, tmp_path), 1)[0].remote_id == "4242"
    assert calls(tmp_path) == [str(job_dir)]


def test_a_lock_held_by_a_live_process_of_this_host_is_in_progress(
        sched: Scheduler, job_dir: Path, tmp_path: Path, live: int) -> None:
    lock(job_dir, f"{HOST} {live} {start_time(live)}\n", age_minutes=IN_PROGRESS_MINUTES + 60)
    result = sched.parse_submit_output(run(sched.submit_command([str(job_dir)]), tmp_path), 1)[0]
    assert result.remote_id is None and not result.unresolved
    assert result.error is not None and result.error.startswith(IN_PROGRESS) and f"process {live}" in result.error
    assert sched.classify_error(result.error) == "transient"  # waited for and asked again
    assert calls(tmp_path) == []


@pytest.mark.parametrize("holder", ["dead", "recycled pid"])
def test_a_young_lock_whose_holder_on_this_host_is_gone_is_unresolved_at_once(
        sched: Scheduler, job_dir: Path, tmp_path: Path, live: int, holder: str) -> None:
    if holder == "dead":
        gone = subprocess.Popen(["true"])
        gone.wait()
        lock(job_dir, f"{HOST} {gone.pid} {start_time(live)}\n")
    else:  # the pid lives, but another process has it now (a different start time)
        lock(job_dir, f"{HOST} {live} {int(start_time(live)) + 1}\n")
    result = sched.parse_submit_output(run(sched.submit_command([str(job_dir)]), tmp_path), 1)[0]
    assert result.unresolved and result.remote_id is None
    assert calls(tmp_path) == []


@pytest.mark.parametrize("text", ["login2.cluster 4242 123456\n", ""], ids=["another host", "no holder"])
def test_a_lock_whose_holder_cannot_be_checked_is_in_progress_while_young_then_unresolved(
        sched: Scheduler, job_dir: Path, tmp_path: Path, text: str) -> None:
    command = sched.submit_command([str(job_dir)])
    lock(job_dir, text, age_minutes=IN_PROGRESS_MINUTES - 1)
    young = sched.parse_submit_output(run(command, tmp_path), 1)[0]
    assert young.error is not None and young.error.startswith(IN_PROGRESS) and not young.unresolved
    lock(job_dir, text, age_minutes=IN_PROGRESS_MINUTES + 1)
    old = sched.parse_submit_output(run(command, tmp_path), 1)[0]
    assert old.unresolved and old.remote_id is None
    assert calls(tmp_path) == []


def test_an_answer_that_failed_is_unresolved_even_while_its_holder_lives(
        sched: Scheduler, job_dir: Path, tmp_path: Path, live: int) -> None:
    lock(job_dir, f"{HOST} {live} {start_time(live)}\n")
    (job_dir / layout.SUBMIT_ANSWER).write_text("1\nsbatch: error: Socket timed out\n")
    result = sched.parse_submit_output(run(sched.submit_command([str(job_dir)]), tmp_path), 1)[0]
    assert result.unresolved


def test_an_array_submission_takes_locks_by_the_same_rule(sched: Scheduler, tmp_path: Path, live: int) -> None:
    dirs = [tmp_path / name for name in ("in_progress", "free")]
    for d in dirs:
        d.mkdir()
    lock(dirs[0], f"{HOST} {live} {start_time(live)}\n")
    command = sched.array_submit_command(str(tmp_path / "arr"), "#!/bin/sh\n", [str(d) for d in dirs], [0, 1])
    results = sched.parse_submit_output(run(command, tmp_path), 2)
    assert results[0].error is not None and results[0].error.startswith(IN_PROGRESS)
    assert results[1].remote_id == "4242_0"
    host, pid, _ = (dirs[1] / layout.SUBMIT_LOCK).read_text().split()
    assert host == HOST and int(pid) > 0
    assert Path(tmp_path / "arr" / "tasks").read_text().split() == [str(dirs[1])]
