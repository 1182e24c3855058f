"""ACE fits up to the command: parameters, database, command line, outputs (ACE1pack is not installed:
a stand-in script with ace_fit.jl's command line plays the command)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.gap_data import al_training_configs
from wfl_async.errors import ConfigurationError
from wfl_async.fit import ace

STANDIN = Path(__file__).parents[1] / "helpers" / "ace_standin.py"
PARAMS = {"basis": {"ace": {"type": "ace", "species": ["Al"], "N": 3, "maxdeg": 6}}, "solver": {"type": "lsqr"}}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("WFL_EXPYRE_INFO", "WFL_ACE_FIT_REMOTEINFO", "WFL_ACE_FIT_COMMAND"):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(STANDIN, tmp_path / "ace_standin.py")
    return tmp_path


def test_fit_writes_wfl_parameters_and_returns_the_potential(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_ACE_FIT_COMMAND", f"{sys.executable} ace_standin.py")
    configs = al_training_configs(6)
    result = ace.fit(configs, "ACE.Al", PARAMS, run_dir="run", verbose=False)
    assert result == Path("run/ACE.Al.json")
    written = yaml.safe_load(Path("run/fit_params_ACE.Al.yaml").read_text())
    assert written["data"] == {"energy_key": "REF_energy", "force_key": "REF_forces", "virial_key": "REF_virial",
                               "fname": "run/ACE.Al_fitting_database.extxyz"}
    assert written["ACE_fname"] == "run/ACE.Al.json"
    assert written["e0"] == {"Al": pytest.approx(configs[0].info["REF_energy"])}
    potential = json.loads(result.read_text())
    assert potential["n_configs"] == 7 and potential["basis"] == PARAMS["basis"]
    assert "stand-in warning" in Path("run/ACE.Al.stderr").read_text()


def test_dry_run_returns_the_matrix_size_and_skip_if_present_reuses_it(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_ACE_FIT_COMMAND", f"{sys.executable} ace_standin.py")
    assert ace.fit(al_training_configs(4), "A", PARAMS, dry_run=True, verbose=False) == [5, 7]
    monkeypatch.setenv("WFL_ACE_FIT_COMMAND", "no_such_ace_fit")
    assert ace.fit(al_training_configs(4), "A", PARAMS, dry_run=True, skip_if_present=True) == [5, 7]


def test_no_command_is_a_clear_error(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_JULIA_COMMAND", "no_such_julia")
    with pytest.raises(ConfigurationError, match="WFL_ACE_FIT_COMMAND is not set and 'no_such_julia' is not on PATH"):
        ace.fit(al_training_configs(2), "A", PARAMS)
    monkeypatch.setenv("WFL_ACE_FIT_COMMAND", "no_such_ace_fit --x")
    with pytest.raises(ConfigurationError, match="'no_such_ace_fit' not found on PATH; set WFL_ACE_FIT_COMMAND"):
        ace.fit(al_training_configs(2), "A", PARAMS)


def test_missing_e0_is_named(in_tmp: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"no e0 for \['Al'\]"):
        ace.fit(al_training_configs(2)[1:], "A", PARAMS)
