"""Bad inputs fail before anything runs or is submitted, with a message naming the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from ase import Atoms

from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import ConfigurationError

CALLED: list[int] = []


def record_call(atoms: list[Atoms]) -> list[Atoms]:
    CALLED.append(len(atoms))
    return [a.copy() for a in atoms]


def nested_inputs() -> ConfigSet:
    return ConfigSet([[Atoms("H")], [Atoms("H")], [Atoms("H")]])


@pytest.mark.parametrize("outputs", [["o0.xyz"], ["o0.xyz", "o1.xyz"]])
def test_fewer_output_files_than_top_level_inputs_fails_before_running(tmp_path: Path, outputs: list[str]) -> None:
    """Used to be an IndexError from inside the OutputSpec (an ExceptionGroup in remote mode) after jobs ran."""
    CALLED.clear()
    with pytest.raises(ConfigurationError, match=r"a list of output files must match .* single file name as a "
                                                 r"string \(OutputSpec\('.*o0.xyz'\)\)"):
        autoparallelize(record_call, nested_inputs(), OutputSpec([tmp_path / f for f in outputs]))
    assert CALLED == [] and not list(tmp_path.iterdir())


def test_matching_list_of_output_files_still_works(tmp_path: Path) -> None:
    outputs = OutputSpec([tmp_path / f"o{i}.xyz" for i in range(3)])
    result = autoparallelize(record_call, nested_inputs(), outputs)
    assert len(list(result)) == 3 and all((tmp_path / f"o{i}.xyz").exists() for i in range(3))


@pytest.mark.remote
def test_output_file_mismatch_submits_nothing(tmp_path: Path, remote_system: str, fresh_expyre_root: Path) -> None:
    info = AutoparaInfo(remote_info=RemoteInfo(sys_name=remote_system, job_name="outputspec_mismatch",
                                               resources={"num_nodes": 1, "max_time": "5m"}))
    with pytest.raises(ConfigurationError, match="a list of output files must match"):
        autoparallelize(record_call, nested_inputs(), OutputSpec([tmp_path / "o0.xyz"]), autopara_info=info)
    assert not (fresh_expyre_root / "wfl_async_jobs.db").exists()
