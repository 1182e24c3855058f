"""A small GAP problem: EMT energies and forces of rattled Al cells, fitted in about a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase.atoms import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT


def al_training_configs(n: int = 24, seed: int = 5) -> list[Atoms]:
    """``n`` rattled, strained 4-atom fcc Al cells and one isolated atom (for e0), EMT-labelled ``REF_``."""
    rng = np.random.default_rng(seed)
    isolated = Atoms("Al", cell=[20, 20, 20], pbc=False)
    configs = [isolated]
    for _ in range(n):
        at = bulk("Al", "fcc", a=4.05 * rng.uniform(0.95, 1.05), cubic=True)
        at.rattle(0.1, rng=rng)
        configs.append(at)
    for at in configs:
        at.calc = EMT()
        at.info["REF_energy"] = at.get_potential_energy()
        at.new_array("REF_forces", at.get_forces())
        at.calc = None
    isolated.info["config_type"] = "isolated_atom"
    return configs


def write_training_file(path: Path, n: int = 24) -> Path:
    ase.io.write(path, al_training_configs(n), format="extxyz")
    return path


TWO_BODY = {"distance_2b": True, "cutoff": 5.0, "covariance_type": "ard_se", "theta_uniform": 1.0,
            "n_sparse": 15, "sparse_method": "uniform"}
SOAP = {"soap": True, "l_max": 3, "n_max": 4, "atom_sigma": 0.5, "cutoff": 4.0, "covariance_type": "dot_product",
        "zeta": 2, "n_sparse": 40, "sparse_method": "cur_points"}


def simple_fit_dict(gap_file: str = "GAP.xml") -> dict[str, Any]:
    """2-body + small SOAP ``run_gap_fit`` parameters with a fixed seed (a deterministic fit)."""
    return {"default_sigma": [0.01, 0.1, 0.0, 0.0], "e0_method": "isolated", "energy_parameter_name": "REF_energy",
            "force_parameter_name": "REF_forces", "gap_file": gap_file, "rnd_seed": 1, "sparse_separate_file": True,
            # a well-conditioned solve, so BLAS code paths differ only in the last digits
            "sparse_jitter": 1.0e-8,
            "_gap": [dict(TWO_BODY, delta=1.0), dict(SOAP, delta=0.1)]}


def multistage_params() -> dict[str, Any]:
    """Two stages, 2-body then SOAP, as wfl's multistage fit takes them."""
    return {"stages": [{"error_scale_factor": 2.0, "descriptors": [{"descriptor": {k: v for k, v in TWO_BODY.items()
                                                                                   if k in ("distance_2b", "cutoff")},
                                                                    "fit": {k: v for k, v in TWO_BODY.items()
                                                                            if k not in ("distance_2b", "cutoff")}}]},
                       {"error_scale_factor": 1.0, "descriptors": [{"descriptor": {k: v for k, v in SOAP.items()
                                                                                   if k in ("soap", "l_max", "n_max",
                                                                                            "atom_sigma", "cutoff")},
                                                                    "fit": {k: v for k, v in SOAP.items()
                                                                            if k not in ("soap", "l_max", "n_max",
                                                                                         "atom_sigma", "cutoff")}}]}],
            "gap_params": {"default_sigma": [0.01, 0.1, 0.0, 0.0], "sparse_jitter": 1.0e-8,
                           "sparse_separate_file": True}}


def energies(gap_file: str | Path, configs: list[Atoms]) -> np.ndarray:
    """The potential's energy of each configuration (quippy ``Potential``)."""
    from quippy.potential import Potential

    potential = Potential(param_filename=str(gap_file))
    values = []
    for at in configs:
        at = at.copy()
        at.calc = potential
        values.append(at.get_potential_energy())
    return np.array(values)
