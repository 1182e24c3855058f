"""One ``gap_fit`` run, wfl 0.3.5's ``wfl.fit.gap.simple`` interface.

``run_gap_fit(fitting_configs, fitting_dict, stdout_file)`` turns ``fitting_dict`` (descriptors
under ``_gap``, one dict each) into ``gap_fit``'s command line, writes the configurations as
the fitting database and runs ``gap_fit`` (``gap_fit_command``, or ``WFL_GAP_FIT_COMMAND``; the
PyPI package ``quippy-ase`` ships it: ``wfl-async install SYSTEM --extra gap`` on a cluster). It returns the
potential's ``.xml`` file name.

It runs as one queued job when ``remote_info=`` is given, or ``WFL_GAP_SIMPLE_FIT_REMOTEINFO``
or ``WFL_EXPYRE_INFO`` selects it (see :func:`wfl_async.fit._queued.fit_remote_info`). The
database goes with the job as an input file; the ``.xml``, its sparse-point files and the
``gap_fit`` output come back next to where a local fit would have written them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from copy import deepcopy
from pathlib import Path
from typing import Any

import ase.io
from ase.atoms import Atoms

from ...autoparallelize.expyre_info import caller_stack_labels
from ...autoparallelize.remoteinfo import RemoteInfo
from ...configset import ConfigSet
from ...errors import ConfigurationError
from ...utils.quip_cli_strings import dict_to_quip_str
from .._queued import FitJob, fit_remote_info, run_fit_jobs, unpack_outputs

__all__ = ["ENV_VAR", "dict_to_gap_fit_string", "gap_fit_job", "run_gap_fit"]

ENV_VAR = "WFL_GAP_SIMPLE_FIT_REMOTEINFO"

_FILE_KEYS = ("atoms_filename", "at_file", "baseline_param_filename", "core_param_file", "gap_file", "gp_file",
              "template_file")


def run_gap_fit(fitting_configs: Iterable[Atoms] | ConfigSet | str | Path, fitting_dict: Mapping[str, Any],
                stdout_file: str | Path, gap_fit_command: str | None = None, verbose: bool = True,
                do_fit: bool = True, remote_info: RemoteInfo | Mapping[str, Any] | str | None = None,
                remote_label: str | None = None, skip_if_present: bool = False,
                wait_for_results: bool = True, **kwargs: Any) -> str | None:
    """Fit a GAP with ``gap_fit``; return the ``.xml`` file name (wfl's arguments and defaults).

    :param fitting_configs: configurations (ConfigSet, list of Atoms, or an extxyz file name)
    :param fitting_dict: ``gap_fit`` arguments; ``_gap`` is the list of descriptor dicts;
        ``default_sigma`` (or ``default_kernel_regularisation``) is required; ``gap_file``
        defaults to ``GAP.xml``
    :param stdout_file: where ``gap_fit``'s output goes
    :param gap_fit_command: the program (default ``$WFL_GAP_FIT_COMMAND`` or ``gap_fit``)
    :param do_fit: False only prints the command
    :param remote_info: RemoteInfo (or its fields) to run as a queued job; ``'_IGNORE'`` fits here
    :param remote_label: key to look up in ``WFL_GAP_SIMPLE_FIT_REMOTEINFO`` / ``WFL_EXPYRE_INFO``
    :param skip_if_present: return at once if ``gap_file`` exists and is readable
    :param wait_for_results: False submits the job and returns None; call again to collect
    :param kwargs: more ``gap_fit`` arguments, overriding ``fitting_dict``
    :raises ConfigurationError: a missing required argument or ``gap_fit`` program
    """
    if "atoms_filename" in fitting_dict or "at_file" in fitting_dict:
        raise ConfigurationError("fitting_dict must not set atoms_filename/at_file: pass the configurations "
                                 "as fitting_configs and run_gap_fit writes the fitting database itself")
    gap_file = str(fitting_dict.get("gap_file", "GAP.xml"))
    if skip_if_present and readable_potential(gap_file):
        print(f"GAP file {gap_file} is found, not refitting.")
        return gap_file
    info = fit_remote_info(remote_info, remote_label, ENV_VAR, caller_stack_labels(sys._getframe(0)))
    if info is None:
        return _fit_here(fitting_configs, fitting_dict, stdout_file, gap_fit_command, verbose, do_fit, kwargs)
    with tempfile.TemporaryDirectory(prefix="wfl_async_gap_") as scratch:
        job = gap_fit_job(info, fitting_configs, fitting_dict, stdout_file, Path(scratch), gap_fit_command,
                          verbose, do_fit, kwargs)
        values = run_fit_jobs([job], wait_for_results)
    if values is None:
        return None
    finish_gap_fit_job(job, gap_file, stdout_file)
    return gap_file


def gap_fit_job(info: RemoteInfo, fitting_configs: Iterable[Atoms] | ConfigSet | str | Path,
                fitting_dict: Mapping[str, Any], stdout_file: str | Path, scratch: Path,
                gap_fit_command: str | None = None, verbose: bool = True, do_fit: bool = True,
                extra_args: Mapping[str, Any] | None = None, job_name: str | None = None) -> FitJob:
    """The queued job of one simple fit; its database is written to ``scratch`` (staged with the job).

    The job writes everything into a directory named after the potential (so several fits can
    run from one directory at once); :func:`finish_gap_fit_job` moves it into place.
    """
    gap_name = Path(str(fitting_dict.get("gap_file", "GAP.xml"))).name
    database = scratch / f"{Path(gap_name).stem}.fitting_database.extxyz"
    ase.io.write(database, list(_configs(fitting_configs)), format="extxyz")
    output_dir = _output_dir(gap_name)
    remote_dict = dict(fitting_dict, gap_file=f"{output_dir}/{gap_name}")
    kwargs = {"fitting_configs": database.name, "fitting_dict": remote_dict,
              "stdout_file": f"{output_dir}/{Path(stdout_file).name}", "gap_fit_command": gap_fit_command,
              "verbose": verbose, "do_fit": do_fit, "extra_args": dict(extra_args or {})}
    return FitJob(info, _fit_here, kwargs, output_dir, input_files=[database],
                  env_defaults={"WFL_GAP_FIT_OMP_NUM_THREADS": "$EXPYRE_NUM_CORES_PER_NODE"}, job_name=job_name)


def finish_gap_fit_job(job: FitJob, gap_file: str | Path, stdout_file: str | Path) -> None:
    """Move a finished job's potential files and ``gap_fit`` output where the caller asked."""
    gap_name = Path(gap_file).name
    unpack_outputs(job.output_dir, {f"{gap_name}*": Path(gap_file).parent,
                                    Path(stdout_file).name: Path(stdout_file)})


def _fit_here(fitting_configs: Iterable[Atoms] | ConfigSet | str | Path, fitting_dict: Mapping[str, Any],
              stdout_file: str | Path, gap_fit_command: str | None, verbose: bool, do_fit: bool,
              extra_args: Mapping[str, Any]) -> str | None:
    gap_file = str(fitting_dict.get("gap_file", "GAP.xml"))
    for path in (gap_file, stdout_file):  # gap_fit does not make directories
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="_GAP_fitting_configs.", dir=".") as scratch:
        database = _database_file(fitting_configs, Path(scratch))
        line = dict_to_gap_fit_string(dict(fitting_dict, atoms_filename=str(database), **extra_args))
        program = shlex.split(os.path.expandvars(gap_fit_command or os.environ.get("WFL_GAP_FIT_COMMAND")
                                                 or "gap_fit"))
        _check_program(program[0])
        command = [*program, *shlex.split(line)]
        if verbose or not do_fit:
            print("fitting command:\n", shlex.join(command))
        if not do_fit:
            return None
        env = dict(os.environ)
        if "WFL_GAP_FIT_OMP_NUM_THREADS" in env:
            env["OMP_NUM_THREADS"] = env["WFL_GAP_FIT_OMP_NUM_THREADS"]
        # no shell: the arguments are passed as they are, whatever characters they hold
        with open(stdout_file, "w") as out:
            completed = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if completed.returncode != 0:
        raise subprocess.CalledProcessError(completed.returncode, command,
                                            output=_tail(stdout_file))
    if not Path(gap_file).exists():
        raise RuntimeError(f"gap_fit exited 0 but wrote no {gap_file}; see {stdout_file}")
    return gap_file


def dict_to_gap_fit_string(param_dict: Mapping[str, Any]) -> str:
    """``gap_fit``'s command line from a dict (wfl's rules).

    Booleans become ``T``/``F``, lists ``{v1 v2 ...}``, values with spaces are quoted, and the
    descriptors in ``_gap`` (a list of dicts) become ``gap={ desc1 : desc2 }``.

    :raises ConfigurationError: no fitting database, no descriptors, or no default sigma
    """
    params = deepcopy(dict(param_dict))
    if "atoms_filename" not in params and "at_file" not in params:
        raise ConfigurationError("gap_fit needs atoms_filename (or at_file)")
    descriptors = params.pop("_gap", None)
    if not descriptors:
        raise ConfigurationError("fitting_dict['_gap'] must be a non-empty list of descriptor dicts, "
                                 "e.g. [{'distance_2b': True, 'cutoff': 5.0, 'delta': 1.0, ...}]")
    if "default_kernel_regularisation" not in params and "default_sigma" not in params:
        raise ConfigurationError("fitting_dict needs default_sigma (e.g. [0.01, 0.1, 0.0, 0.0]) "
                                 "or default_kernel_regularisation")
    for key in _FILE_KEYS:
        if key in params:
            params[key] = str(params[key])
    line = dict_to_quip_str(params)
    descriptor_strings = [dict_to_quip_str(d, list_brackets="{{}}") for d in descriptors]
    return line + " gap={ " + " : ".join(descriptor_strings) + " }"


def _configs(fitting_configs: Iterable[Atoms] | ConfigSet | str | Path) -> Iterable[Atoms]:
    if isinstance(fitting_configs, str | Path):
        return ase.io.iread(fitting_configs, ":")
    return fitting_configs


def _database_file(fitting_configs: Iterable[Atoms] | ConfigSet | str | Path, scratch: Path) -> Path:
    """The extxyz file gap_fit reads: the input itself if it is one file, else a scratch copy."""
    if isinstance(fitting_configs, str | Path):
        return Path(fitting_configs)
    one_file = getattr(fitting_configs, "one_file", lambda: None)()
    if one_file:
        return Path(one_file)
    path = scratch / "fitting_configs.extxyz"
    ase.io.write(path, list(fitting_configs), format="extxyz")
    return path


def _output_dir(gap_name: str) -> str:
    return f"_{gap_name}.fit_files"


def _check_program(first: str) -> None:
    if shutil.which(first) is None:
        raise ConfigurationError(f"gap_fit program {first!r} not found on PATH; on a cluster, install it with "
                                 f"'wfl-async install SYSTEM --extra gap' on the driver (quippy-ase, in the "
                                 f"system's venv); on this machine, pip install -e '.[gap]' in the wfl_async "
                                 f"checkout; or set WFL_GAP_FIT_COMMAND or gap_fit_command to its path")


def _tail(path: str | Path, lines: int = 30) -> str:
    try:
        return "".join(Path(path).read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def readable_potential(gap_file: str) -> bool:
    """The file exists and quippy can load it (wfl's check before skipping a fit)."""
    if not Path(gap_file).is_file():
        return False
    try:
        from quippy.potential import Potential

        Potential(param_filename=gap_file)
    except (ImportError, RuntimeError):
        return False
    return True
