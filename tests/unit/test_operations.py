"""calculate, optimize and md against direct ASE, and against wfl 0.3.5 where wfl runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from ase.atoms import Atoms
from ase.calculators.emt import EMT
from ase.constraints import FixSymmetry
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize.precon import PreconLBFGS
from ase.units import fs

from tests.helpers.configs import cu_configs
from wfl_async.calculators.generic import calculate
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.generate.md import md
from wfl_async.generate.optimize import optimize

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(autouse=True)
def _local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WFL_EXPYRE_INFO", raising=False)
    monkeypatch.delenv("WFL_NUM_PYTHON_SUBPROCESSES", raising=False)


# ---- calculate ---------------------------------------------------------------------------


def test_calculate_matches_direct_emt_with_default_prefix() -> None:
    out = calculate(ConfigSet(cu_configs(3)), OutputSpec(), calculator=(EMT, [], {}))
    assert out is not None
    results = list(out)
    for at, ref in zip(results, cu_configs(3), strict=True):
        ref.calc = EMT()
        assert at.info["EMT_energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(at.arrays["EMT_forces"], ref.get_forces(), atol=1e-10)
        np.testing.assert_allclose(at.info["EMT_stress"], ref.get_stress(), atol=1e-10)
        assert at.calc is None


def test_calculate_prefix_properties_and_calculator_object(tmp_path: Path) -> None:
    out = calculate(ConfigSet(cu_configs(2)), OutputSpec(tmp_path / "c.xyz"), EMT(), properties=["energy"],
                    output_prefix="my_")
    assert out is not None
    at = next(iter(out))
    assert "my_energy" in at.info and "my_forces" not in at.arrays and "my_stress" not in at.info


def test_calculate_single_point_calculator_when_prefix_is_none() -> None:
    out = calculate(ConfigSet(cu_configs(1)), OutputSpec(), calculator=EMT(), output_prefix=None)
    assert out is not None
    at = next(iter(out))
    ref = cu_configs(1)[0]
    ref.calc = EMT()
    assert at.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-10)


def test_calculate_equals_wfl(tmp_path: Path) -> None:
    from wfl.calculators.generic import calculate as wfl_calculate
    from wfl.configset import ConfigSet as WflConfigSet
    from wfl.configset import OutputSpec as WflOutputSpec

    calculate(ConfigSet(cu_configs(4)), OutputSpec(tmp_path / "ours.xyz"), calculator=(EMT, [], {}))
    wfl_calculate(WflConfigSet(cu_configs(4)), WflOutputSpec(str(tmp_path / "wfl.xyz")), calculator=(EMT, [], {}))
    assert (tmp_path / "ours.xyz").read_text() == (tmp_path / "wfl.xyz").read_text()


# ---- optimize ----------------------------------------------------------------------------


def _direct_relax(at: Atoms, fmax: float, steps: int) -> tuple[float, np.ndarray, bool]:
    at = at.copy()
    at.set_constraint([FixSymmetry(at, adjust_cell=False)])
    at.calc = EMT()
    opt = PreconLBFGS(at, logfile=None)
    converged = opt.run(fmax=fmax, smax=fmax, steps=steps)
    return at.get_potential_energy(), at.positions.copy(), bool(converged)


def test_optimize_final_configs_match_direct_preconlbfgs() -> None:
    out = optimize(ConfigSet(cu_configs(2)), OutputSpec(), calculator=(EMT, [], {}), fmax=1e-2, steps=50)
    assert out is not None
    groups = list(out.groups())
    assert len(groups) == 2
    for group, start in zip(groups, cu_configs(2), strict=True):
        traj = list(group)
        energy, positions, converged = _direct_relax(start, 1e-2, 50)
        last = traj[-1]
        assert traj[0].info["optimize_config_type"] == "optimize_initial"
        assert last.info["optimize_config_type"] == ("optimize_last_converged" if converged
                                                     else "optimize_last_unconverged")
        assert last.info["last_op__optimize_energy"] == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(last.positions, positions, atol=1e-8)
        assert last.info["config_type"] == last.info["optimize_config_type"]
        assert last.info["optimize_n_steps"] >= 1


def test_optimize_subselect_and_pressure_relaxes_cell() -> None:
    out = optimize(ConfigSet(cu_configs(2)), OutputSpec(), calculator=(EMT, [], {}), fmax=1e-2, steps=15,
                   pressure=0.0, traj_subselect="last", keep_symmetry=False)
    assert out is not None
    finals = list(out)
    assert len(finals) == 2
    assert all("optimize_pressure_GPa" in at.info for at in finals)
    assert not np.allclose(finals[0].cell, cu_configs(1)[0].cell)


def test_optimize_equals_wfl(tmp_path: Path) -> None:
    from wfl.configset import ConfigSet as WflConfigSet
    from wfl.configset import OutputSpec as WflOutputSpec
    from wfl.generate.optimize import optimize as wfl_optimize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimize(ConfigSet(cu_configs(2)), OutputSpec(tmp_path / "ours.xyz"), calculator=(EMT, [], {}),
                 fmax=1e-2, steps=20)
        wfl_optimize(WflConfigSet(cu_configs(2)), WflOutputSpec(str(tmp_path / "wfl.xyz")),
                     calculator=(EMT, [], {}), fmax=1e-2, steps=20)
    ours = list(ConfigSet(tmp_path / "ours.xyz"))
    theirs = list(ConfigSet(tmp_path / "wfl.xyz"))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)
        assert a.info.keys() == b.info.keys()
        for key, value in a.info.items():
            if isinstance(value, str):
                assert value == b.info[key]
            else:
                np.testing.assert_allclose(value, b.info[key], atol=1e-8)


# ---- md ----------------------------------------------------------------------------------


def test_md_nve_matches_direct_velocity_verlet() -> None:
    out = md(ConfigSet(cu_configs(2)), OutputSpec(), calculator=(EMT, [], {}), steps=10, dt=2.0)
    assert out is not None
    trajs = [list(g) for g in out.groups()]
    for traj, start in zip(trajs, cu_configs(2), strict=True):
        at = start.copy()
        at.calc = EMT()
        VelocityVerlet(at, timestep=2.0 * fs).run(10)
        assert [c.info["MD_step"] for c in traj[:3]] == [0, 1, 2]
        np.testing.assert_allclose(traj[-1].positions, at.positions, atol=1e-8)
        assert traj[-1].info["last_op__md_energy"] == pytest.approx(at.get_potential_energy(), abs=1e-8)


def _direct_langevin(start: Atoms, item_rng: np.random.Generator, steps: int) -> np.ndarray:
    at = start.copy()
    at.calc = EMT()
    thermalize_momenta(at, 300, exact_temperature=True, rng=item_rng)
    Stationary(at, preserve_temperature=True)
    Langevin(at, timestep=1.0 * fs, temperature_K=300, friction=1 / (50 * fs), rng=item_rng).run(steps)
    return np.array(at.positions)


def test_md_langevin_is_deterministic_per_item_and_matches_direct_ase() -> None:
    kwargs = {"calculator": (EMT, [], {}), "steps": 6, "dt": 1.0, "temperature": 300, "temperature_tau": 50,
              "integrator": "Langevin"}
    first = md(ConfigSet(cu_configs(3)), OutputSpec(), rng=np.random.default_rng(11), **kwargs)
    again = md(ConfigSet(cu_configs(3)), OutputSpec(), rng=np.random.default_rng(11),
               autopara_info={"num_inputs_per_python_subprocess": 1, "num_python_subprocesses": 2}, **kwargs)
    assert first is not None and again is not None
    finals = [list(g)[-1] for g in first.groups()]
    finals_again = [list(g)[-1] for g in again.groups()]
    call_rng = np.random.default_rng(11).spawn(1)[0]
    for at, at_again, start in zip(finals, finals_again, cu_configs(3), strict=True):
        np.testing.assert_allclose(at.positions, at_again.positions, atol=1e-10)
        np.testing.assert_allclose(at.positions, _direct_langevin(start, call_rng.spawn(1)[0], 6), atol=1e-8)
    assert not np.allclose(finals[0].positions - cu_configs(3)[0].positions,
                           finals[1].positions - cu_configs(3)[1].positions)


def test_md_per_config_kwargs_override() -> None:
    ats = cu_configs(2)
    ats[1].info["WFL_MD_KWARGS"] = '{"traj_step_interval": 5}'
    out = md(ConfigSet(ats), OutputSpec(), calculator=(EMT, [], {}), steps=10, dt=1.0)
    assert out is not None
    lengths = [len(list(g)) for g in out.groups()]
    assert lengths == [11, 3]
