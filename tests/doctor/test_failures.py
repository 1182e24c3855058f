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
from wfl_async.job import RemoteJob

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


def test_autoparallelized_call_to_a_broken_system_raises_the_doctor_error_itself(broken_root: Path) -> None:
    """Not an ExceptionGroup, and not one error per chunk: the check's own error, once."""
    from tests.helpers.configs import cu_configs, tag_with_pid
    from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
    from wfl_async.configset import ConfigSet, OutputSpec
    from wfl_async.errors import SystemNotReadyError

    info = AutoparaInfo(remote_info=RemoteInfo(sys_name="numpy_mismatch", job_name="broken_autopara",
                                               resources={"num_nodes": 1, "max_time": "5m"},
                                               num_inputs_per_queued_job=1))
    with pytest.raises(SystemNotReadyError, match="numpy 9.0.0 there"):
        autoparallelize(tag_with_pid, ConfigSet(cu_configs(4)), OutputSpec(), autopara_info=info)
