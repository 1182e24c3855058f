"""ACE fits with ACE1pack's ``ace_fit.jl``, wfl 0.3.5's ``wfl.fit.ace`` interface.

``fit(configs, ACE_name, ace_fit_params)`` fills in what wfl fills in (reference property keys,
``ACE_fname``, ``e0`` from isolated atoms, per-config weights from sigmas), writes the fitting
database and the YAML parameter file, and runs ``<command> --params <file>``. The command is
``ace_fit_command``, else ``WFL_ACE_FIT_COMMAND``, else found through ``julia`` (``WFL_JULIA_COMMAND``,
default ``julia``) and ACE1pack's install path, as in wfl.

One queued job when ``remote_info=``, ``WFL_ACE_FIT_REMOTEINFO`` or ``WFL_EXPYRE_INFO`` selects it:
the database goes with the job, the command is resolved *in the job* (set
``WFL_ACE_FIT_COMMAND`` in ``env_vars`` or the system's ``commands``), and ``run_dir`` comes back.
ACE1pack (Julia) was not installed where this was developed: everything up to the command is
tested for real with a stand-in command; a real ACE1pack fit has not been run.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from copy import deepcopy
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import yaml
from ase.atoms import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from ..autoparallelize.expyre_info import caller_stack_labels
from ..autoparallelize.remoteinfo import RemoteInfo
from ..errors import ConfigurationError
from ..utils.misc import yaml_safe
from ._queued import FitJob, fit_remote_info, run_fit_jobs, unpack_outputs

__all__ = ["ENV_VAR", "ace_fit_command_from_env", "fit", "prepare_configs", "prepare_params", "run_ace_fit"]

ENV_VAR = "WFL_ACE_FIT_REMOTEINFO"

_ISOLATED_DEFAULT = ("isolated_atom", "IsolatedAtom")


def fit(fitting_configs: Iterable[Atoms], ACE_name: str, ace_fit_params: Mapping[str, Any],
        ace_fit_command: str | None = None, ref_property_prefix: str = "REF_", skip_if_present: bool = False,
        run_dir: str | Path = ".", dry_run: bool = False, verbose: bool = True,
        remote_info: RemoteInfo | Mapping[str, Any] | str | None = None, remote_label: str | None = None,
        wait_for_results: bool = True, isolated_atom_info_key: str = "config_type",
        isolated_atom_info_value: str | list[str] = "default") -> Path | list[int] | None:
    """Fit an ACE potential; return its ``.json`` path (or, ``dry_run``, the LSQ matrix shape).

    :param ACE_name: file stem of the potential, ``<run_dir>/<ACE_name>.json``
    :param ace_fit_params: ACE1pack parameters (``basis``, ``solver``, ...); see :func:`prepare_params`
    :param remote_info: RemoteInfo (or its fields) for one queued job; ``'_IGNORE'`` fits here
    :param wait_for_results: False submits the job and returns None; call again to collect
    """
    configs = prepare_configs(fitting_configs, ref_property_prefix)
    params = prepare_params(ACE_name, configs, ace_fit_params, run_dir, ref_property_prefix,
                            isolated_atom_info_key=isolated_atom_info_key,
                            isolated_atom_info_value=isolated_atom_info_value)
    return run_ace_fit(configs, params, skip_if_present=skip_if_present, run_dir=run_dir,
                       ace_fit_command=ace_fit_command, dry_run=dry_run, verbose=verbose, remote_info=remote_info,
                       remote_label=remote_label, wait_for_results=wait_for_results,
                       _stack=caller_stack_labels(sys._getframe(0)))


def prepare_params(ACE_name: str, fitting_configs: list[Atoms], ace_fit_params: Mapping[str, Any],
                   run_dir: str | Path = ".", ref_property_prefix: str = "REF_",
                   isolated_atom_info_key: str = "config_type",
                   isolated_atom_info_value: str | list[str] = "default") -> dict[str, Any]:
    """``ace_fit_params`` completed as wfl does: data keys, ``ACE_fname``, ``e0``, sigma weights.

    ``"weights": {"from_sigma": True}`` gives each configuration its own weights from its
    ``energy_sigma``/``force_sigma``/``virial_sigma`` (a string: from that info key).

    :raises ConfigurationError: e0 missing for a species, or given twice
    """
    if not ref_property_prefix:
        raise ConfigurationError("ref_property_prefix must be a non-empty string, e.g. 'REF_'")
    params = deepcopy(dict(ace_fit_params))
    data = params.setdefault("data", {})
    data.update(energy_key=f"{ref_property_prefix}energy", force_key=f"{ref_property_prefix}forces",
                virial_key=f"{ref_property_prefix}virial")
    ace_fname = str(Path(run_dir) / f"{ACE_name}.json")
    if "ACE_fname" in params:
        warnings.warn(f"Overriding 'ACE_fname' {params['ACE_fname']!r} in ace_fit_params with {ace_fname!r}",
                      stacklevel=2)
    params["ACE_fname"] = ace_fname
    _set_e0(params, fitting_configs, ref_property_prefix, isolated_atom_info_key, isolated_atom_info_value)
    from_sigma = params.get("weights", {}).pop("from_sigma", None)
    if from_sigma:
        default = params["weights"].get("default", {})
        for i, at in enumerate(fitting_configs):
            at.info["pre_fit_config_type"] = at.info.get("config_type", "None")
            at.info["config_type"] = f"config_{i}"
            keys = ({"E": "energy_sigma", "F": "force_sigma", "V": "virial_sigma"} if from_sigma is True
                    else dict.fromkeys("EFV", from_sigma))
            params["weights"][f"config_{i}"] = {p: default.get(p, 1.0) / at.info.get(k, 1.0) for p, k in keys.items()}
    return params


def prepare_configs(fitting_configs: Iterable[Atoms], ref_property_prefix: str = "REF_") -> list[Atoms]:
    """The configurations as a list, with ``<prefix>virial`` from ``<prefix>stress`` (ace_fit.jl reads virials)."""
    configs = [at.copy() for at in fitting_configs]
    for at in configs:
        stress = at.info.get(ref_property_prefix + "stress")
        if stress is not None:
            stress = np.asarray(stress)
            if stress.shape == (6,):
                stress = voigt_6_to_full_3x3_stress(stress)
            at.info[ref_property_prefix + "virial"] = np.array((-stress * at.get_volume()).ravel())
    return configs


def run_ace_fit(fitting_configs: list[Atoms], ace_fit_params: Mapping[str, Any], skip_if_present: bool = False,
                run_dir: str | Path = ".", ace_fit_command: str | None = None, dry_run: bool = False,
                verbose: bool = True, remote_info: RemoteInfo | Mapping[str, Any] | str | None = None,
                remote_label: str | None = None, wait_for_results: bool = True,
                _stack: list[str] | None = None) -> Path | list[int] | None:
    """Run ace_fit.jl on prepared configurations and parameters (see :func:`fit`)."""
    params = deepcopy(dict(ace_fit_params))
    ace_file = Path(params["ACE_fname"])
    if skip_if_present:
        try:
            return _read_size(_base(ace_file)) if dry_run else _checked_output(ace_file)
        except (FileNotFoundError, ValueError):
            pass
    stack = _stack if _stack is not None else caller_stack_labels(sys._getframe(0))
    info = fit_remote_info(remote_info, remote_label, ENV_VAR, stack)
    if info is None:
        return _fit_here(list(fitting_configs), params, ace_fit_command, dry_run, verbose)
    output_dir = f"_{ace_file.stem}.ace_fit_files"
    with tempfile.TemporaryDirectory(prefix="wfl_async_ace_") as scratch:
        database = Path(scratch) / f"{ace_file.stem}.ace_fit_input.extxyz"
        ase.io.write(database, list(fitting_configs), format="extxyz")
        job = FitJob(info, _fit_in_job,
                     {"fitting_configs": database.name, "params": dict(params, ACE_fname=f"{output_dir}/{ace_file.name}"),
                      "ace_fit_command": ace_fit_command, "dry_run": dry_run, "verbose": verbose},
                     output_dir, input_files=[database])
        values = run_fit_jobs([job], wait_for_results)
    if values is None:
        return None
    unpack_outputs(output_dir, {"*": ace_file.parent})
    return _read_size(_base(ace_file)) if dry_run else _checked_output(ace_file)


def _fit_in_job(fitting_configs: str, params: dict[str, Any], ace_fit_command: str | None, dry_run: bool,
                verbose: bool) -> Any:
    """What the queued job runs: read the staged database, fit here."""
    return _fit_here(list(ase.io.iread(fitting_configs, ":")), params, ace_fit_command, dry_run, verbose)


def _fit_here(configs: list[Atoms], params: dict[str, Any], ace_fit_command: str | None, dry_run: bool,
              verbose: bool) -> Path | list[int]:
    ace_file = Path(params["ACE_fname"])
    base = _base(ace_file)
    ace_file.parent.mkdir(parents=True, exist_ok=True)
    database = f"{base}_fitting_database.extxyz"
    if "fname" in params["data"]:
        warnings.warn(f"Ignoring configs file {params['data']['fname']!r} in ace_fit_params: using the configs "
                      f"passed in, written to {database!r}", stacklevel=2)
    params["data"]["fname"] = database
    ase.io.write(database, configs, format="extxyz")
    params_file = ace_file.parent / f"fit_params_{ace_file.stem}.yaml"
    params_file.write_text(yaml.safe_dump(yaml_safe(params, tuple_as_string=True), indent=4))

    command = [*shlex.split(ace_fit_command or ace_fit_command_from_env()), "--params", str(params_file)]
    if dry_run:
        command.append("--dry-run")
    if "WFL_ACE_FIT_BLAS_THREADS" in os.environ:
        command += ["--num-blas-threads", str(int(os.environ["WFL_ACE_FIT_BLAS_THREADS"]))]
    if shutil.which(command[0]) is None:
        raise ConfigurationError(f"ACE fit command {command[0]!r} not found on PATH; set WFL_ACE_FIT_COMMAND "
                                 f"(e.g. 'julia $HOME/.julia/packages/ACE1pack/<hash>/scripts/ace_fit.jl') or "
                                 f"pass ace_fit_command")
    if verbose:
        print("fitting command:\n", shlex.join(command))
    env = dict(os.environ)
    if "WFL_ACE_FIT_JULIA_THREADS" in env:
        env["JULIA_NUM_THREADS"] = env["WFL_ACE_FIT_JULIA_THREADS"]
    with open(f"{base}.stdout", "w") as out, open(f"{base}.stderr", "w") as err:
        completed = subprocess.run(command, stdout=out, stderr=err, env=env)
    if verbose or completed.returncode != 0:
        for stream in ("stdout", "stderr"):
            for line in Path(f"{base}.{stream}").read_text(errors="replace").splitlines():
                print(stream.upper(), line)
    if completed.returncode != 0:
        raise subprocess.CalledProcessError(completed.returncode, command)
    return _read_size(base) if dry_run else _checked_output(ace_file)


def ace_fit_command_from_env() -> str:
    """``WFL_ACE_FIT_COMMAND``, else ``julia`` plus ACE1pack's ``scripts/ace_fit.jl`` (wfl's lookup).

    :raises ConfigurationError: neither the variable nor a julia with ACE1pack
    """
    if os.environ.get("WFL_ACE_FIT_COMMAND"):
        return os.environ["WFL_ACE_FIT_COMMAND"]
    julia = os.environ.get("WFL_JULIA_COMMAND", "julia")
    hint = ("set WFL_ACE_FIT_COMMAND to the ACE1pack fitting command, e.g. "
            "'julia $HOME/.julia/packages/ACE1pack/<hash>/scripts/ace_fit.jl'")
    if shutil.which(shlex.split(julia)[0]) is None:
        raise ConfigurationError(f"no ACE fit command: WFL_ACE_FIT_COMMAND is not set and {julia!r} is not on "
                                 f"PATH to find ACE1pack; {hint}")
    found = subprocess.run(shlex.split(julia), input="import(ACE1pack)\nprint(pathof(ACE1pack))\n", text=True,
                           capture_output=True)
    path = found.stdout.strip()
    if found.returncode != 0 or "\n" in path or "ERROR:" in path or not path:
        raise ConfigurationError(f"no ACE fit command: {julia!r} could not load ACE1pack "
                                 f"({(found.stderr or path).strip()[-300:]}); {hint}")
    return f"{julia} {Path(path).resolve().parent.parent / 'scripts' / 'ace_fit.jl'}"


def _set_e0(params: dict[str, Any], configs: list[Atoms], prefix: str, info_key: str,
            info_value: str | list[str]) -> None:
    values = _ISOLATED_DEFAULT if info_value == "default" else ([info_value] if isinstance(info_value, str)
                                                                else info_value)
    isolated = [at for at in configs if at.info.get(info_key) in values]
    if any(len(at) != 1 for at in isolated):
        raise ConfigurationError(f"a configuration with {info_key} in {list(values)} has more than one atom")
    symbols = [str(at.symbols) for at in isolated]
    if len(set(symbols)) != len(symbols):
        raise ConfigurationError(f"an isolated atom appears more than once: {symbols}")
    if isolated and "e0" in params:
        raise ConfigurationError("e0 given both by isolated atoms in the configurations and in ace_fit_params")
    if isolated:
        params["e0"] = {str(at.symbols): at.info[f"{prefix}energy"] for at in isolated}
    elements = set(itertools.chain.from_iterable(at.get_chemical_symbols() for at in configs))
    missing = sorted(elements - set(params.get("e0", {})))
    if missing:
        raise ConfigurationError(f"no e0 for {missing}: add an isolated-atom configuration ({info_key}="
                                 f"{values[0]!r}) per element, or ace_fit_params['e0']")


def _base(ace_file: Path) -> str:
    return str(ace_file.parent / ace_file.stem)


def _read_size(base: str) -> list[int]:
    with open(base + ".size") as fin:
        return list(json.load(fin)["lsq_matrix_shape"])


def _checked_output(ace_file: Path) -> Path:
    if ace_file.suffix != ".json":
        raise ValueError(f"cannot check ACE file {ace_file} with unknown suffix")
    try:
        json.loads(ace_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"cannot parse ACE JSON file {ace_file}: {exc}") from None
    return ace_file
