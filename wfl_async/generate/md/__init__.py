"""md: molecular dynamics for sampling configurations, returning each trajectory.

Deterministic for a given ``rng``: every input gets its own generator (spawned per item by
autoparallelize), used for initial velocities, random pressures and Langevin noise.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from ase.atoms import Atoms
from ase.md.langevin import Langevin
from ase.md.logger import MDLogger
from ase.md.nptberendsen import NPTBerendsen
from ase.md.nvtberendsen import NVTBerendsen
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
from ase.parallel import DummyMPI
from ase.units import GPa, fs

from ...autoparallelize.operation import AutoparaOperation
from ...utils.misc import atoms_to_list
from ...utils.parallel import construct_calculator_picklesafe
from ...utils.pressure import sample_pressure
from ...utils.save_calc_results import at_copy_save_calc_results
from ..utils import save_config_type

__all__ = ["md"]

_INTEGRATORS = ("Berendsen", "Langevin", "LangevinBAOAB")


def _initial_velocities(at: Atoms, temperature_k: float, rng: Any) -> None:
    """Maxwell-Boltzmann momenta at exactly ``temperature_k``, no net momentum.

    With the serial communicator: velocities must not be broadcast over MPI from a pool worker.
    """
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.26
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        comm_kw = "comm" if "comm" in inspect.signature(MaxwellBoltzmannDistribution).parameters else "communicator"
        MaxwellBoltzmannDistribution(at, temperature_K=temperature_k, force_temp=True, rng=rng,
                                     **{comm_kw: DummyMPI()})
    else:
        thermalize_momenta(at, temperature_k, comm=DummyMPI(), exact_temperature=True, rng=rng)
    Stationary(at, preserve_temperature=True)


def _select_all(at: Atoms) -> bool:
    return True


def _temperature_stages(temperature: Any, steps: int) -> list[dict[str, Any]] | None:
    """wfl's temperature forms as a list of stage dicts ``{T_i, T_f, traj_frac, n_stages}``."""
    if temperature is None:
        return None
    if isinstance(temperature, dict):
        stages: Any = temperature
    else:
        try:
            len(temperature)
            stages = temperature
        except TypeError:
            stages = [temperature]
    if not isinstance(stages[0], dict):
        stage = {"T_i": stages[0], "T_f": stages[0], "traj_frac": 1.0, "n_stages": 10, "steps": steps}
        if len(stages) >= 2:
            stage["T_f"] = stages[1]
        if len(stages) >= 3:
            stage["n_stages"] = stages[2]
        return [stage]
    for stage in stages:
        stage.setdefault("n_stages", 10)
    return list(stages)


def _pressure_and_compressibility(pressure: Any, compressibility_au: float | None, fd_displ: float,
                                  at: Atoms, rng: Any) -> tuple[float | None, float | None]:
    if pressure is None:
        return None, compressibility_au
    p = sample_pressure(pressure, at, rng=rng)
    at.info["MD_pressure_GPa"] = p
    p_au = p * GPa
    if compressibility_au is None:  # finite-difference estimate for NPTBerendsen
        e0 = at.get_potential_energy()
        cell = at.get_cell()
        at.set_cell(cell * (1.0 + fd_displ), scale_atoms=True)
        e_plus = at.get_potential_energy()
        at.set_cell(cell * (1.0 - fd_displ), scale_atoms=True)
        e_minus = at.get_potential_energy()
        at.set_cell(cell, scale_atoms=True)
        compressibility_au = at.get_volume() / ((e_plus + e_minus - 2.0 * e0) / fd_displ ** 2)
    return p_au, compressibility_au


def _md_class(integrator: str, temperature_tau: float | None, pressure: float | None) -> Any:
    if integrator == "LangevinBAOAB":
        try:
            from ase.md.langevinbaoab import LangevinBAOAB
        except ImportError:
            raise ValueError("integrator LangevinBAOAB needs ASE >= 3.27") from None
        return LangevinBAOAB
    if temperature_tau is None:
        return VelocityVerlet
    if integrator == "Langevin":
        return Langevin
    if integrator == "Berendsen":
        return NVTBerendsen if pressure is None else NPTBerendsen
    raise ValueError(f"Unkown integrator {integrator}")


def _stage_kwargs(integrator: str, dt: float, temperature_tau: float | None, pressure: float | None,
                  compressibility_au: float | None, hydrostatic: bool, pressure_tau: float | None,
                  pressure_mass_factor: float, rng: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"timestep": dt * fs}
    if pressure is not None:
        if pressure_tau is None and temperature_tau is None:
            raise ValueError("pressure control needs pressure_tau or temperature_tau")
        p_tau = (pressure_tau if pressure_tau is not None else 3 * (temperature_tau or 0.0)) * fs
        if integrator == "LangevinBAOAB":
            kwargs.update(externalstress=pressure, P_tau=p_tau, P_mass_factor=pressure_mass_factor,
                          hydrostatic=hydrostatic)
        elif integrator == "Berendsen":
            if temperature_tau is None:
                raise ValueError("integrator Berendsen got pressure but no temperature_tau")
            if not hydrostatic:
                raise ValueError("integrator Berendsen got hydrostatic False")
            kwargs.update(pressure_au=pressure, compressibility_au=compressibility_au, taup=p_tau)
        else:
            raise ValueError(f"Only LangevinBAOAB and Berendsen integrator support pressure, got {integrator}")
    if temperature_tau is not None:
        if integrator == "LangevinBAOAB":
            assert rng is not None, "LangevinBAOAB needs an rng"
            kwargs.update(T_tau=temperature_tau * fs, rng=rng)
        elif integrator == "Berendsen":
            kwargs["taut"] = temperature_tau * fs
        elif integrator == "Langevin":
            assert rng is not None, "Langevin needs an rng"
            kwargs.update(friction=1 / (temperature_tau * fs), rng=rng)
    return kwargs


def _stages(stage_kwargs: dict[str, Any], temperature_tau: float | None, stages: list[dict[str, Any]] | None,
            steps: int) -> list[tuple[dict[str, Any], int]]:
    """(integrator kwargs, number of steps) for each constant-temperature stage."""
    if temperature_tau is None:
        return [(dict(stage_kwargs), steps)]
    assert stages is not None, "a thermostat (temperature_tau) needs a temperature"
    out: list[tuple[dict[str, Any], int]] = []
    for stage in stages:
        stage_steps = stage["traj_frac"] * steps
        if stage["T_f"] == stage["T_i"]:
            out.append(({**stage_kwargs, "temperature_K": stage["T_i"]}, int(np.round(stage_steps))))
        else:
            sub_steps = int(np.round(stage_steps / stage["n_stages"]))
            out.extend(({**stage_kwargs, "temperature_K": t}, sub_steps)
                       for t in np.linspace(stage["T_i"], stage["T_f"], stage["n_stages"]))
    return out


def _md_single(at: Atoms, calculator: Any, steps: int, dt: float, item_rng: Any, item_i: Any,
               logger: tuple[int, Any, Any, dict[str, Any]], integrator: str = "Berendsen",
               temperature: Any = None, temperature_tau: float | None = None, pressure: Any = None,
               hydrostatic: bool = True, pressure_tau: float | None = None, pressure_mass_factor: float = 1,
               compressibility_au: float | None = None, compressibility_fd_displ: float = 0.01,
               traj_step_interval: int = 1, skip_failures: bool = True, results_prefix: str = "last_op__md_",
               verbose: bool = False, update_config_type: str | bool = "append",
               traj_select_during_func: Callable[[Atoms], bool] = _select_all,
               traj_select_after_func: Callable[[list[Atoms]], list[Atoms]] | None = None,
               abort_check: Any = None) -> list[Atoms]:
    logger_interval, logger_class, logger_logfile, logger_kwargs = logger
    at.calc = calculator
    stages = _temperature_stages(temperature, steps)
    pressure_au, compressibility_use = _pressure_and_compressibility(
        pressure, compressibility_au, compressibility_fd_displ, at, item_rng)
    if stages is not None:
        assert item_rng is not None, "an initial temperature needs an rng"
        _initial_velocities(at, stages[0]["T_i"], item_rng)

    md_class = _md_class(integrator, temperature_tau, pressure_au)
    base_kwargs = _stage_kwargs(integrator, dt, temperature_tau, pressure_au, compressibility_use, hydrostatic,
                                pressure_tau, pressure_mass_factor, item_rng)

    traj: list[Atoms] = []
    cur_step = 1
    first_step_of_later_stage = False

    def save_step(interval: int) -> None:
        nonlocal cur_step, first_step_of_later_stage
        if not first_step_of_later_stage and cur_step % interval == 0:
            at.info["MD_time_fs"] = cur_step * dt
            at.info["MD_step"] = cur_step
            at.info["MD_current_temperature"] = at.get_temperature()
            saved = at_copy_save_calc_results(at, prefix=results_prefix)
            if traj_select_during_func(at):
                traj.append(saved)
            if abort_check is not None and abort_check.stop(at):
                raise RuntimeError(f"MD was stopped by the MD checker function {abort_check.__class__.__name__}")
        first_step_of_later_stage = False
        cur_step += 1

    for stage_i, (kwargs, n_steps) in enumerate(_stages(base_kwargs, temperature_tau, stages, steps)):
        if verbose:
            print("run stage", kwargs, {"steps": n_steps})
        cur_step -= 1  # the last step of a stage is the first of the next
        if temperature_tau is not None:
            at.info["MD_temperature_K"] = kwargs["temperature_K"]
        dyn = md_class(at, **kwargs)
        dyn.attach(save_step, 1, traj_step_interval)
        if logger_interval > 0:
            log_kwargs = dict(logger_kwargs)
            log_kwargs["logfile"] = "-" if logger_logfile == "-" else f"{logger_logfile}.config_{item_i}"
            log = logger_class(dyn=dyn, atoms=at, **log_kwargs)
            if log_kwargs["logfile"] == "-":
                log.hdr = f"config {item_i} " + log.hdr
                log.fmt = f"config {item_i} " + log.fmt
            dyn.attach(log, logger_interval)
        if stage_i > 0:
            first_step_of_later_stage = True
        try:
            dyn.run(steps=n_steps)
        except Exception as exc:
            if not skip_failures:
                raise
            sys.stderr.write(f"MD failed with exception '{exc}'\n")
            sys.stderr.flush()
            break

    if (not traj or traj[-1] != at) and traj_select_during_func(at):
        at.info["MD_time_fs"] = cur_step * dt
        traj.append(at_copy_save_calc_results(at, prefix=results_prefix))
    if traj_select_after_func is not None:
        traj = traj_select_after_func(traj)
    for config in traj:
        save_config_type(config, update_config_type, "MD")
    return traj


def _sample_autopara_wrappable(atoms: Atoms | list[Atoms], calculator: Any, steps: int, dt: float,
                               integrator: str = "Berendsen", temperature: Any = None,
                               temperature_tau: float | None = None, pressure: Any = None, hydrostatic: bool = True,
                               pressure_tau: float | None = None, pressure_mass_factor: float = 1,
                               compressibility_au: float | None = None, compressibility_fd_displ: float = 0.01,
                               traj_step_interval: int = 1, skip_failures: bool = True,
                               results_prefix: str = "last_op__md_", verbose: bool = False,
                               update_config_type: str | bool = "append",
                               traj_select_during_func: Callable[[Atoms], bool] = _select_all,
                               traj_select_after_func: Callable[[list[Atoms]], list[Atoms]] | None = None,
                               abort_check: Any = None, logger_interval: int = 0,
                               logger_kwargs: dict[str, Any] | None = None, rng: Any = None,
                               _autopara_per_item_info: list[dict[str, Any]] | None = None) -> list[list[Atoms]]:
    """Run MD from each configuration with aggressive (not necessarily physical) integrators.

    Calculator results of each saved frame are stored under ``results_prefix`` (default
    ``last_op__md_``). Frames carry ``MD_time_fs``, ``MD_step``, ``MD_current_temperature``
    (and ``MD_temperature_K``, ``MD_pressure_GPa`` when controlled). Every keyword except
    calculator, steps, dt and ``logger_*`` can be overridden per configuration by a JSON
    dict in ``info["WFL_MD_KWARGS"]``.

    :param atoms: input configurations
    :param calculator: ASE calculator or ``(constructor, args, kwargs)``
    :param steps: number of steps
    :param dt: time step (fs)
    :param integrator: "Berendsen", "Langevin" (both NVE VelocityVerlet without
        temperature_tau) or "LangevinBAOAB"
    :param temperature: K; a float, ``(T_i, T_f[, n_stages])`` ramp, or a list of stage
        dicts ``{"T_i", "T_f", "traj_frac"[, "n_stages"]}``; sets initial velocities
    :param temperature_tau: thermostat time (fs); 1/friction for Langevin
    :param pressure: GPa, any :func:`~wfl_async.utils.pressure.sample_pressure` form
    :param hydrostatic: only hydrostatic strain under pressure
    :param pressure_tau: barostat time (fs), default 3 * temperature_tau
    :param pressure_mass_factor: LangevinBAOAB barostat mass factor
    :param compressibility_au: for NPTBerendsen; estimated by finite differences if None
    :param compressibility_fd_displ: strain used for that estimate
    :param traj_step_interval: save every this many steps
    :param skip_failures: on an integrator exception keep the frames so far
    :param results_prefix: prefix of calculator-result keys
    :param verbose: print stage information
    :param update_config_type: "append", "overwrite" or False: how "MD" goes into config_type
    :param traj_select_during_func: keep a frame only if this returns True
    :param traj_select_after_func: function of the whole trajectory returning the frames to keep
    :param abort_check: object whose ``stop(atoms)`` returning True aborts the run
    :param logger_interval: MDLogger interval (0: no logging)
    :param logger_kwargs: MDLogger kwargs; "logfile" (config number appended, "-" for
        stdout) and "logger" (a logger class) are special
    :param rng: random generator; each item gets its own, spawned from it
    :return: per input, the list of saved frames
    """
    integrator_kw = {"integrator": integrator, "temperature": temperature, "temperature_tau": temperature_tau,
                     "pressure": pressure, "hydrostatic": hydrostatic, "pressure_tau": pressure_tau,
                     "pressure_mass_factor": pressure_mass_factor, "compressibility_au": compressibility_au,
                     "compressibility_fd_displ": compressibility_fd_displ,
                     "traj_step_interval": traj_step_interval, "skip_failures": skip_failures,
                     "results_prefix": results_prefix, "verbose": verbose,
                     "update_config_type": update_config_type, "traj_select_during_func": traj_select_during_func,
                     "traj_select_after_func": traj_select_after_func, "abort_check": abort_check}
    if integrator not in _INTEGRATORS:
        raise ValueError(f"Unknown integrator {integrator}, not Berendsen, Langevin, or LangevinBAOAB")
    calculator = construct_calculator_picklesafe(calculator)
    log_kwargs = dict(logger_kwargs or {})
    logger_class = log_kwargs.pop("logger", MDLogger) if logger_interval > 0 else None
    logger_logfile = log_kwargs.pop("logfile", "-") if logger_interval > 0 else None
    logger = (logger_interval, logger_class, logger_logfile, log_kwargs)

    all_trajs = []
    for at_i, at in enumerate(atoms_to_list(atoms)):
        item_info = _autopara_per_item_info[at_i] if _autopara_per_item_info else {"rng": rng, "item_i": at_i}
        kwargs_at = dict(integrator_kw)
        kwargs_at.update(json.loads(at.info.get("WFL_MD_KWARGS", "{}")))
        all_trajs.append(_md_single(at, calculator, steps, dt, item_info.get("rng"), item_info.get("item_i"),
                                    logger, **kwargs_at))
    return all_trajs


md = AutoparaOperation(_sample_autopara_wrappable, name="md", module=__name__,
                       default_autopara_info={"num_inputs_per_python_subprocess": 10})
