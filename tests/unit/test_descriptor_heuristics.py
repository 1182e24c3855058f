"""Descriptors from templates and length scales, and multistage params from them (wfl's ``prep_params``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers.gap_data import al_training_configs, energies
from wfl_async.configset import ConfigSet
from wfl_async.descriptor_heuristics import descriptor_2brn_uniform_file, descriptors_from_length_scales
from wfl_async.errors import ConfigurationError
from wfl_async.fit.gap import multistage

LENGTHS = {6: {"bond_len": [1.5, "test"]}, 14: {"bond_len": [2.36, "test"]}}
HYPERS = {6: [{"cutoff": 3.03, "cutoff_transition_width": 0.35, "atom_gaussian_width": 0.5},
              {"cutoff": 4.03, "cutoff_transition_width": 0.5, "atom_gaussian_width": 1.0}],
          14: [{"cutoff": 5.03, "cutoff_transition_width": 0.75, "atom_gaussian_width": 1.5}]}


def test_pair_centre_and_universal_soap_templates_spread_over_the_species() -> None:
    templates = [{"distance_2b": True, "cutoff": "_EVAL_ {BOND_LEN_Z1_Z2}*3", "Z1": "_EVAL_ {Z1}",
                  "Z2": "_EVAL_ {Z2}", "add_species": "manual_Z_pair"},
                 {"soap": True, "cutoff": "_EVAL_ {BOND_LEN_Z_MAX}*2", "atom_sigma": "_EVAL_ {BOND_LEN_Z}/3",
                  "Z": "_EVAL_ {Zcenter}", "n_species": "_EVAL_ {nZ}", "species_Z": "_EVAL_ {Zs}",
                  "add_species": "manual_Zcenter"},
                 {"soap": True, "cutoff": "_EVAL_ {R_CUT}", "cutoff_transition_width": "_EVAL_ {R_TRANS}",
                  "atom_sigma": "_EVAL_ {ATOM_SIGMA}", "Z": "_EVAL_ {Zcenter}", "add_species": "manual_universal_SOAP"},
                 {"soap": True, "cutoff": "_EVAL_ {BOND_LEN_MAX}*2"}]
    descriptors, species = descriptors_from_length_scales(templates, [14, 6, 6], LENGTHS, HYPERS)
    assert species == [(6, 6), (6, 14), (14, 14), 6, 14, 6, 6, 14, None]
    pairs = descriptors[:3]
    assert [(d["Z1"], d["Z2"], d["cutoff"]) for d in pairs] == [(6, 6, 4.5), (6, 14, 5.8), (14, 14, 7.1)]
    assert all(d["add_species"] is False for d in descriptors[:8])
    centre_c, centre_si = descriptors[3:5]
    assert (centre_c["cutoff"], centre_c["atom_sigma"], centre_c["species_Z"]) == (3.9, 0.5, [6, 14])
    assert (centre_si["cutoff"], centre_si["atom_sigma"], centre_si["n_species"]) == (4.7, 0.79, 2)
    assert [(d["Z"], d["cutoff"], d["cutoff_transition_width"]) for d in descriptors[5:8]] == [
        (6, 3.0, 0.35), (6, 4.0, 0.5), (14, 5.0, 0.75)]  # 2 significant figures, as in wfl
    assert descriptors[8] == {"soap": True, "cutoff": 4.7}  # auto: gap_fit adds the species
    assert templates[0]["add_species"] == "manual_Z_pair"  # the templates are not changed


def test_bad_templates_are_clear_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown add_species 'per_atom'"):
        descriptors_from_length_scales({"soap": True, "add_species": "per_atom"}, [6], LENGTHS)
    with pytest.raises(ConfigurationError, match="no SOAP_hypers"):
        descriptors_from_length_scales({"soap": True, "add_species": "manual_universal_SOAP"}, [6], LENGTHS)
    with pytest.raises(ConfigurationError, match=r"no 'bond_len' for Z \[8\]"):
        descriptors_from_length_scales({"soap": True}, [6, 8], LENGTHS)


def test_2brn_uniform_sparse_points_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    params = [{"descriptor": {"distance_Nb": True}, "fit": {"sparse_method": "_2BRN_UNIFORM_FILE_", "n_sparse": 4,
                                                             "exponents": [-1, -2], "cutoff": 5.0,
                                                             "cutoff_transition_width": 1.0}}]
    assert descriptor_2brn_uniform_file(params, ident="_stage_0") == 1
    fit = params[0]["fit"]
    assert fit["sparse_method"] == "file" and fit["sparse_file"] == str(tmp_path / "input_sparsepoints_stage_0_desc_0")
    values = np.loadtxt(fit["sparse_file"]).reshape(4, 3)
    assert np.allclose(values, [[1.0, 1 / r, 1 / r**2] for r in (1.0, 2.0, 3.0, 4.0)])


TEMPLATE = {"stages": [{"error_scale_factor": 2.0, "descriptors": [{
                "descriptor": {"distance_2b": True, "cutoff": "_EVAL_ {BOND_LEN_MAX}*1.8"},
                "fit": {"covariance_type": "ard_se", "theta_uniform": 1.0, "n_sparse": 15, "sparse_method": "uniform"},
                "add_species": False}]},
            {"error_scale_factor": 1.0, "descriptors": [{
                "descriptor": {"soap": True, "l_max": 3, "n_max": 4, "atom_sigma": "_EVAL_ {ATOM_SIGMA}",
                               "cutoff": "_EVAL_ {R_CUT}", "cutoff_transition_width": "_EVAL_ {R_TRANS}",
                               "Z": "_EVAL_ {Zcenter}", "n_species": "_EVAL_ {nZ}", "species_Z": "_EVAL_ {Zs}"},
                "fit": {"covariance_type": "dot_product", "zeta": 2, "n_sparse": 40, "sparse_method": "cur_points"},
                "add_species": "manual_universal_SOAP"}]}],
            "gap_params": {"default_sigma": [0.01, 0.1, 0.0, 0.0], "sparse_jitter": 1.0e-8,
                           "sparse_separate_file": True}}


def test_prep_params_fills_every_stage_from_universal_soap_and_the_fit_runs(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from universalSOAP import SOAP_hypers  # the gap extra

    monkeypatch.chdir(tmp_path)
    (tmp_path / "template.yaml").write_text(yaml.safe_dump(TEMPLATE))
    with pytest.raises(ConfigurationError, match="need 'min_bond_len' in length_scales"):
        multistage.prep_params([13], {13: {"bond_len": [2.86, "fcc Al"]}}, TEMPLATE)
    lengths = {13: {"bond_len": [2.86, "fcc Al"], "min_bond_len": [2.4, "fcc Al compressed"]}}
    params = multistage.prep_params([13], lengths, tmp_path / "template.yaml")
    assert params["stages"][0]["descriptors"] == [{**TEMPLATE["stages"][0]["descriptors"][0],  # type: ignore[index]
                                                   "descriptor": {"distance_2b": True, "cutoff": 5.1}}]
    soaps = params["stages"][1]["descriptors"]
    expected = SOAP_hypers([13], lengths, 1.5, False, False, sharpness=1.0)[13]
    assert [d["descriptor"]["cutoff"] for d in soaps] == [float(f"{h['cutoff']:.2g}") for h in expected]
    assert all(d["descriptor"]["Z"] == 13 and d["descriptor"]["species_Z"] == [13] for d in soaps)
    assert multistage.max_cutoff(params) == max(5.1, *(d["descriptor"]["cutoff"] for d in soaps))

    configs = al_training_configs()
    final_file, _ = multistage.fit(ConfigSet(configs), "AlGAP", params, seeds=[1, 2], run_dir="run")
    reference = np.array([at.info["REF_energy"] for at in configs[1:]])
    assert np.abs(energies(final_file, configs[1:]) - reference).mean() < 0.05  # eV per 4-atom cell


def test_prep_params_without_universal_soap_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "universalSOAP", None)  # as if not installed
    with pytest.raises(ConfigurationError, match="pip install universalSOAP"):
        multistage.prep_params([13], {13: {"bond_len": [2.86, "x"]}}, TEMPLATE)
