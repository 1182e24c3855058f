"""optimize: geometry (and optionally cell) relaxation, returning each trajectory."""

from __future__ import annotations

import sys
from typing import Any

import ase.units
from ase.atoms import Atoms

from ..autoparallelize.operation import AutoparaOperation
from ..utils.misc import atoms_to_list
from ..utils.parallel import construct_calculator_picklesafe
from ..utils.pressure import sample_pressure
from ..utils.save_calc_results import at_copy_save_calc_results
from .utils import save_config_type

__all__ = ["optimize", "subselect_from_traj"]


def _optimizer_class() -> Any:
    """PreconLBFGS, as wfl uses (with its ``smax``); plain LBFGS if this ASE lacks it."""
    try:
        from ase.optimize.precon import PreconLBFGS
    except ImportError:  # pragma: no cover - every supported ASE has it
        from ase.optimize import LBFGS

        return LBFGS
    return PreconLBFGS


def _cell_filter(at: Atoms, scalar_pressure: float, mask: Any) -> Any:
    try:
        from ase.filters import FrechetCellFilter
    except ImportError:  # older ASE
        from ase.constraints import ExpCellFilter as FrechetCellFilter  # type: ignore[attr-defined,no-redef,unused-ignore]
    return FrechetCellFilter(at, scalar_pressure=scalar_pressure, mask=mask)


def _fix_symmetry(at: Atoms) -> Any:
    try:
        from ase.constraints import FixSymmetry
    except ImportError:  # before ASE MR 3288
        from ase.spacegroup.symmetrize import FixSymmetry  # type: ignore[attr-defined,no-redef,unused-ignore]
    return FixSymmetry(at, adjust_cell=False)


def _print_symmetry(at: Atoms, when: str) -> None:
    try:
        import spglib
    except ImportError:
        return
    dataset = spglib.get_symmetry_dataset((at.cell[:], at.get_scaled_positions(), at.numbers), 0.01)
    prefix = f"{at.info['buildcell_config_i']} " if "buildcell_config_i" in at.info else ""
    if dataset is None:
        print(f"{prefix}{when} symmetry group number None")
    else:
        print(f"{prefix}{when} symmetry group number {dataset.number}, international (Hermann-Mauguin) "
              f"{dataset.international} Hall {dataset.hall} prec 0.01")


def _run_autopara_wrappable(atoms: Atoms | list[Atoms], calculator: Any, fmax: float = 1.0e-3,
                            smax: float | None = None, steps: int = 1000, pressure: Any = None,
                            stress_mask: Any = None, keep_symmetry: bool = True, traj_step_interval: int = 1,
                            traj_subselect: str | None = None, skip_failures: bool = True,
                            results_prefix: str = "last_op__optimize_", verbose: bool = False,
                            update_config_type: str | bool = "append", rng: Any = None,
                            _autopara_per_item_info: list[dict[str, Any]] | None = None,
                            **opt_kwargs: Any) -> list[Any]:
    """Relax each configuration with PreconLBFGS; return its trajectory (or a subselection).

    Calculator results of every saved step are stored under ``results_prefix`` (by default
    ``last_op__optimize_``, replacing other ``last_op__`` keys). Each step has
    ``info["optimize_config_type"]``: ``optimize_initial``, ``optimize_mid``, or for the last
    ``optimize_last_converged``/``_unconverged``/``_exception``; the last also has
    ``optimize_n_steps``.

    :param atoms: input configurations
    :param calculator: ASE calculator or ``(constructor, args, kwargs)``
    :param fmax: force tolerance (eV/A)
    :param smax: stress tolerance (default: fmax)
    :param steps: maximum number of steps
    :param pressure: if given, relax the cell too at this pressure (GPa), any
        :func:`~wfl_async.utils.pressure.sample_pressure` specification
    :param stress_mask: mask of stress components for the cell filter
    :param keep_symmetry: constrain to the initial symmetry (FixSymmetry)
    :param traj_step_interval: save every this many steps
    :param traj_subselect: None (whole trajectory), "last", or "last_converged" (last
        config if converged, else nothing)
    :param skip_failures: on an optimiser exception keep what was done instead of raising
    :param results_prefix: prefix of the info/arrays keys of calculator results
    :param verbose: log the optimisation and symmetry to stdout
    :param update_config_type: "append", "overwrite" or False: how ``optimize_config_type``
        goes into ``info["config_type"]``
    :param rng: random generator (for a random pressure); each item gets its own
    :param opt_kwargs: extra kwargs for the optimiser
    :return: per input, the list of saved configurations (or one, or None; see
        ``traj_subselect``)
    """
    opt_kwargs_use: dict[str, Any] = {"logfile": None}
    opt_kwargs_use.update(opt_kwargs)
    if opt_kwargs_use.get("logfile") is None and verbose:
        opt_kwargs_use["logfile"] = "-"
    calculator = construct_calculator_picklesafe(calculator)
    if smax is None:
        smax = fmax
    optimizer_class = _optimizer_class()

    all_trajs = []
    for at_i, at in enumerate(atoms_to_list(atoms)):
        item_rng = _autopara_per_item_info[at_i].get("rng") if _autopara_per_item_info else rng
        org_constraints = at.constraints
        if keep_symmetry:
            at.set_constraint([*at.constraints, _fix_symmetry(at)])
            if verbose:
                _print_symmetry(at, "initial")

        at.calc = calculator
        if pressure is not None:
            p = sample_pressure(pressure, at, rng=item_rng)
            at.info["optimize_pressure_GPa"] = p
            wrapped: Any = _cell_filter(at, p * ase.units.GPa, stress_mask)
        else:
            wrapped = at
        opt = optimizer_class(wrapped, **opt_kwargs_use)

        at.info["optimize_config_type"] = "optimize_mid"
        traj: list[Atoms] = []

        def save_step(at: Atoms = at, traj: list[Atoms] = traj, org_constraints: Any = org_constraints) -> None:
            min_vol = at.info.get("RSS_min_vol_per_atom")
            if min_vol is not None and at.get_volume() / len(at) < min_vol:
                raise RuntimeError(f"Got volume per atom {at.get_volume() / len(at)} under minimum {min_vol}")
            if traj and traj[-1] == at:
                return  # some optimisers repeat a configuration near breakdown
            config = at_copy_save_calc_results(at, prefix=results_prefix)
            config.set_constraint(org_constraints)
            traj.append(config)

        opt.attach(save_step, interval=traj_step_interval)

        status = "unconverged"
        converged = False
        try:
            converged = bool(opt.run(fmax=fmax, smax=smax, steps=steps) if optimizer_class.__name__ == "PreconLBFGS"
                             else opt.run(fmax=fmax, steps=steps))
        except Exception as exc:
            status = "exception"
            if not skip_failures:
                raise
            sys.stderr.write(f"Structure optimization failed with exception '{exc}'\n")
            sys.stderr.flush()

        if not traj or traj[-1] != at:
            config = at_copy_save_calc_results(at, prefix=results_prefix)
            config.set_constraint(org_constraints)
            traj.append(config)

        traj[0].info["optimize_config_type"] = "optimize_initial"
        # Optimizer.run's return value, not converged(): PreconLBFGS needs no gradient for it
        if converged:
            status = "converged"
        traj[-1].info["optimize_config_type"] = f"optimize_last_{status}"
        traj[-1].info["optimize_n_steps"] = opt.nsteps

        if keep_symmetry and verbose:
            _print_symmetry(traj[-1], "final")
        for config in traj:
            save_config_type(config, update_config_type, config.info["optimize_config_type"])

        all_trajs.append(subselect_from_traj(traj, subselect=traj_subselect))

    return all_trajs


def subselect_from_traj(traj: list[Atoms], subselect: Any = None) -> Any:
    """Pick configurations from a trajectory.

    :param subselect: None (all), "last" (the last config), "last_converged" (the last
        config if converged, else None)
    :raises RuntimeError: any other rule
    """
    if subselect is None:
        return traj
    if subselect == "last":
        return traj[-1]
    if subselect == "last_converged":
        return traj[-1] if traj[-1].info["optimize_config_type"] == "optimize_last_converged" else None
    raise RuntimeError(f'Subselecting confgs from trajectory with rule "subselect={subselect}" is not yet implemented')


optimize = AutoparaOperation(_run_autopara_wrappable, name="optimize", module=__name__,
                             default_autopara_info={"num_inputs_per_python_subprocess": 10})
