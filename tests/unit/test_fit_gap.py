"""GAP fits in this process, with the real gap_fit (quippy-ase, the ``gap`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.gap_data import al_training_configs, energies, multistage_params, simple_fit_dict
from wfl_async.configset import ConfigSet
from wfl_async.errors import ConfigurationError
from wfl_async.fit.committee import fit_gap_committee
from wfl_async.fit.gap import multistage
from wfl_async.fit.gap.simple import dict_to_gap_fit_string, run_gap_fit


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("WFL_EXPYRE_INFO", "WFL_GAP_SIMPLE_FIT_REMOTEINFO", "WFL_GAP_MULTISTAGE_FIT_REMOTEINFO"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_gap_fit_command_line_follows_wfl_rules() -> None:
    line = dict_to_gap_fit_string({"atoms_filename": Path("db.xyz"), "default_sigma": [0.01, 0.1, 0, 0],
                                   "sparse_separate_file": True,
                                   "_gap": [{"distance_2b": True, "cutoff": 5.0}, {"soap": True, "Z": [13, 14]}]})
    assert line == ("atoms_filename=db.xyz default_sigma={0.01 0.1 0 0} sparse_separate_file=T "
                    "gap={ distance_2b=T cutoff=5.0 : soap=T Z={{13 14}} }")


def test_missing_descriptors_or_sigma_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="_gap"):
        dict_to_gap_fit_string({"atoms_filename": "x", "default_sigma": [1, 1, 1, 1]})
    with pytest.raises(ConfigurationError, match="default_sigma"):
        dict_to_gap_fit_string({"atoms_filename": "x", "_gap": [{"soap": True}]})


def test_simple_fit_writes_a_potential_that_reproduces_emt(in_tmp: Path) -> None:
    configs = al_training_configs()
    result = run_gap_fit(ConfigSet(configs), simple_fit_dict("out/Al.xml"), "out/stdout", verbose=False)
    assert result == "out/Al.xml"
    assert len(list(Path("out").glob("Al.xml.sparseX.*"))) == 2
    predicted = energies(result, configs[1:])
    reference = np.array([at.info["REF_energy"] for at in configs[1:]])
    assert np.abs(predicted - reference).max() / 4 < 0.01  # eV/atom on its own training set
    assert "libAtoms::Finalise" in Path("out/stdout").read_text()


def test_missing_gap_fit_program_names_the_fix(in_tmp: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"not found on PATH.*wfl-async install SYSTEM --extra gap"):
        run_gap_fit(al_training_configs(3), simple_fit_dict(), "stdout", gap_fit_command="no_such_gap_fit")


def test_skip_if_present_does_not_refit(in_tmp: Path) -> None:
    configs = al_training_configs()
    run_gap_fit(configs, simple_fit_dict(), "stdout", verbose=False)
    before = Path("GAP.xml").stat().st_mtime_ns
    assert run_gap_fit(configs, simple_fit_dict(), "stdout", gap_fit_command="no_such_gap_fit",
                       skip_if_present=True) == "GAP.xml"
    assert Path("GAP.xml").stat().st_mtime_ns == before


def test_multistage_fit_labels_the_final_potential_and_lowers_the_error(in_tmp: Path) -> None:
    configs = al_training_configs()
    final_file, final_name = multistage.fit(ConfigSet(configs), "AlGAP", multistage_params(), seeds=[1, 2],
                                            run_dir="run")
    assert (final_file, final_name) == ("run/AlGAP.xml", "AlGAP")
    assert multistage.GAP_xml_modify_label(final_file) == "AlGAP"
    reference = np.array([at.info["REF_energy"] for at in configs[1:]])
    stage0 = np.abs(energies("run/AlGAP.stage_0.xml", configs[1:]) - reference).mean()
    final = np.abs(energies(final_file, configs[1:]) - reference).mean()
    assert final < stage0


def test_multistage_without_isolated_atom_fails_before_fitting(in_tmp: Path) -> None:
    with pytest.raises(ConfigurationError, match="isolated_atom"):
        multistage.fit(al_training_configs()[1:], "AlGAP", multistage_params(), seeds=[1, 2])


def test_local_committee_gives_distinct_models(in_tmp: Path) -> None:
    configs = al_training_configs()
    files = fit_gap_committee(configs, simple_fit_dict("c/Al.xml"), 3, stdout_file="c/stdout", bootstrap=True)
    assert files == [f"c/Al.committee_{i}.xml" for i in range(3)]
    predictions = [energies(f, configs[1:6]) for f in files]
    assert not np.allclose(predictions[0], predictions[1])
