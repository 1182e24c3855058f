"""What a user sees when the system check is skipped (or passes) and the job still cannot work.

``WFL_ASYNC_SKIP_SYSTEM_CHECK=1`` lets the broken systems get as far as they can: the run
directory error still names the system, the path and the key; a job whose worker could not
start dies with its worker log's last error line in the JobDiedError.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import remote_functions as rf
from wfl_async.doctor import SKIP_ENV_VAR
from wfl_async.errors import ConfigurationError, JobDiedError
from wfl_async.jobs.remote_job import RemoteJob

pytestmark = pytest.mark.remote


def job(system: str, name: str) -> RemoteJob:
    return RemoteJob(rf.sleep_then_return, (0, name), sys_name=system, job_name=name,
                     resources={"num_nodes": 1, "max_time": "5m"}, check_interval=0.5)


def test_unwritable_rundir_names_system_path_and_key(broken_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SKIP_ENV_VAR, "1")
    with pytest.raises(ConfigurationError) as info:
        job("readonly_rundir", "rundir_case").run()
    message = str(info.value)
    assert "'readonly_rundir'" in message and "readonly/run" in message and 'set "rundir"' in message
    assert "Permission denied" in message


def test_died_job_says_its_worker_logs_last_error(broken_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SKIP_ENV_VAR, "1")
    with pytest.raises(JobDiedError) as info:
        job("no_wfl_async", "died_case").run()
    assert "worker log" in str(info.value)
    assert "ModuleNotFoundError: No module named 'wfl_async'" in str(info.value)
