"""The failure classifier (wfl_async/failures.py): what waiting cannot cure, from real messages."""

from __future__ import annotations

import errno
import os

import pytest

from wfl_async.errors import RemoteCommandError
from wfl_async.failures import permanent_cause, permanent_error


@pytest.mark.parametrize(("text", "cause"), [
    ("tar: job/x.pkl: Cannot write: No space left on device", "no space left on device"),
    ("mkdir: cannot create directory '/scratch/run': Disk quota exceeded", "disk quota exceeded"),
    ("touch: cannot touch '/ro/x': Read-only file system", "read-only file system"),
    ("mkdir: cannot create directory '/root/run': Permission denied", "permission denied"),
    ("bash: line 1: sbatch: command not found", "a command is missing"),
    ("/bin/sh: 1: qsub: not found", "a command is missing"),
    ("database or disk is full", "no space left on device"),
])
def test_permanent_messages_are_named(text: str, cause: str) -> None:
    found = permanent_cause(text)
    assert found is not None and found.cause.startswith(cause)


@pytest.mark.parametrize("text", [
    "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
    "slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
    "error: commlib error: got select error (Connection refused)",
    "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying",
    "exit status 1",
])
def test_transient_messages_are_left_to_retry(text: str) -> None:
    assert permanent_cause(text) is None


def test_an_oserror_is_read_by_its_errno_and_a_command_by_its_stderr_and_status() -> None:
    assert permanent_cause(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))).cause.startswith("no space")
    assert permanent_cause(OSError(errno.EIO, os.strerror(errno.EIO))) is None  # may pass: retried
    missing = RemoteCommandError("frobnicate", 127, b"", b"", "ssh host x")
    assert permanent_cause(missing).cause == "a command is missing"
    full = RemoteCommandError("tar", 2, b"", b"tar: a: Cannot write: No space left on device\n", "")
    assert permanent_cause(full).cause.startswith("no space")


def test_the_message_names_system_path_cause_and_the_fix_for_where_it_happened() -> None:
    cause = permanent_cause("No space left on device")
    assert cause is not None
    remote = str(permanent_error(cause, system="cluster", path="/scratch/u/run", doing="staging 3 job(s)",
                                 detail="tar: x: Cannot write: No space left on device", consequence="Stopped."))
    assert remote.startswith("cluster: staging 3 job(s) under /scratch/u/run failed: no space left on device")
    assert "wfl-async clean --remote" in remote and "'rundir'" in remote and "df -h /scratch/u/run" in remote
    local = str(permanent_error(cause, system="local", path="/home/u/_expyre", doing="fetching", detail="",
                                consequence="Stopped."))
    assert "'wfl-async clean'" in local and "local_stage_dir" in local and "rundir" not in local
