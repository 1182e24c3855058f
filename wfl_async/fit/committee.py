"""A committee of GAPs as N queued jobs submitted at once (wfl fits a committee one after another).

``fit_gap_committee(configs, fitting_dict, n)`` makes N simple fits that differ in ``rnd_seed``
and, with ``bootstrap=True``, in the configurations (each model a sample with replacement of the
same size; isolated atoms always kept, for ``e0``). Seeds come from ``fitting_dict``'s
``rnd_seed`` (default 1) plus the model index, so a rerun of the same call makes the same jobs:
it re-attaches to those still running and submits nothing for finished ones.
Model ``i``'s file is ``<gap_file stem>.committee_<i>.xml``.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ase.atoms import Atoms

from ..autoparallelize.expyre_info import caller_stack_labels
from ..autoparallelize.remoteinfo import RemoteInfo
from ..configset import ConfigSet
from ..errors import ConfigurationError
from ._queued import fit_remote_info, run_fit_jobs
from .gap.simple import ENV_VAR, finish_gap_fit_job, gap_fit_job, run_gap_fit

__all__ = ["committee_members", "fit_gap_committee"]


def committee_members(configs: list[Atoms], n: int, base_seed: int, bootstrap: bool) -> list[tuple[int, list[Atoms]]]:
    """``(seed, configurations)`` of each model; bootstrap samples are drawn from that seed."""
    members = []
    for i in range(n):
        seed = base_seed + i
        if not bootstrap:
            members.append((seed, configs))
            continue
        isolated = [at for at in configs if at.info.get("config_type") == "isolated_atom"]
        others = [at for at in configs if at.info.get("config_type") != "isolated_atom"]
        picks = np.random.default_rng(seed).integers(len(others), size=len(others))
        members.append((seed, isolated + [others[p] for p in picks]))
    return members


def fit_gap_committee(fitting_configs: Iterable[Atoms] | ConfigSet, fitting_dict: Mapping[str, Any], n_models: int,
                      stdout_file: str | Path = "stdout.gap_fit", bootstrap: bool = False,
                      gap_fit_command: str | None = None, verbose: bool = False,
                      remote_info: RemoteInfo | Mapping[str, Any] | str | None = None,
                      remote_label: str | None = None, wait_for_results: bool = True) -> list[str] | None:
    """Fit ``n_models`` GAPs; as N queued jobs at once when a RemoteInfo applies (as for ``run_gap_fit``).

    :param fitting_dict: as for :func:`~wfl_async.fit.gap.simple.run_gap_fit`; its ``gap_file``
        (default ``GAP.xml``) and ``stdout_file`` get ``.committee_<i>`` in their names
    :param bootstrap: each model fits a bootstrap sample of the configurations
    :param wait_for_results: False submits the jobs and returns None; call again to collect
    :returns: the potential files, model 0 first (load each with quippy's ``Potential``)
    :raises ConfigurationError: ``n_models`` < 1
    """
    if n_models < 1:
        raise ConfigurationError(f"n_models must be at least 1, got {n_models}")
    configs = list(fitting_configs)
    gap_file = Path(str(fitting_dict.get("gap_file", "GAP.xml")))
    stdout_file = Path(stdout_file)
    files = [str(gap_file.with_name(f"{gap_file.stem}.committee_{i}{gap_file.suffix}")) for i in range(n_models)]
    stdouts = [stdout_file.with_name(f"{stdout_file.name}.committee_{i}") for i in range(n_models)]
    members = committee_members(configs, n_models, int(fitting_dict.get("rnd_seed", 1)), bootstrap)
    dicts = [dict(fitting_dict, gap_file=files[i], rnd_seed=seed) for i, (seed, _) in enumerate(members)]
    info = fit_remote_info(remote_info, remote_label, ENV_VAR, caller_stack_labels(sys._getframe(0)))
    if info is None:
        for (_, member), params, out in zip(members, dicts, stdouts, strict=True):
            run_gap_fit(member, params, out, gap_fit_command=gap_fit_command, verbose=verbose, remote_info="_IGNORE")
        return files
    with tempfile.TemporaryDirectory(prefix="wfl_async_committee_") as scratch:
        jobs = []
        for i, ((_, member), params, out) in enumerate(zip(members, dicts, stdouts, strict=True)):
            member_dir = Path(scratch) / str(i)
            member_dir.mkdir()
            jobs.append(gap_fit_job(info, member, params, out, member_dir, gap_fit_command, verbose,
                                    job_name=f"{info.job_name}_committee_{i}"))
        if run_fit_jobs(jobs, wait_for_results) is None:
            return None
    for job, path, out in zip(jobs, files, stdouts, strict=True):
        finish_gap_fit_job(job, path, out)
    return files
