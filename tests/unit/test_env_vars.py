"""env_vars: one line each, refused before anything is submitted; ExPyRe's shell semantics kept."""

from __future__ import annotations

import pytest

from wfl_async.autoparallelize import RemoteInfo
from wfl_async.errors import ConfigurationError
from wfl_async.job import RemoteJob
from wfl_async.jobs.env_vars import check_env_vars, export_lines


@pytest.mark.parametrize(("value", "what"), [("1\nrm -rf ~", "a newline"), ("1\0", "a NUL byte")])
def test_a_value_with_a_newline_or_nul_is_refused_naming_the_variable(value: str, what: str) -> None:
    with pytest.raises(ConfigurationError, match=f"env_vars value of OMP_NUM_THREADS contains {what}"):
        check_env_vars(["A=1", f"OMP_NUM_THREADS={value}"])
    with pytest.raises(ConfigurationError, match="OMP_NUM_THREADS"):
        RemoteInfo(sys_name="local", job_name="j", resources={"num_cores": 1}, env_vars=[f"OMP_NUM_THREADS={value}"])


def test_remote_job_refuses_it_before_anything_is_submitted() -> None:
    # refused when the job's options are made: before prepare, claim or any remote command
    with pytest.raises(ConfigurationError, match="env_vars value of BAD contains a newline"):
        RemoteJob(print, ("x",), resources={"num_cores": 1, "max_time": "1m"}, exact_fit=False,
                  env_vars=["GOOD=1", "BAD=two\nlines"])


def test_shell_expansion_in_values_is_the_users_own() -> None:
    assert export_lines(["N=$EXPYRE_NUM_CORES_PER_NODE", "D=$(date +%s)", "Q='a b'"]) == [
        "export N=$EXPYRE_NUM_CORES_PER_NODE", "export D=$(date +%s)", "export Q='a b'"]


def test_not_an_assignment_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="is not NAME=value"):
        check_env_vars(["1BAD=x"])
