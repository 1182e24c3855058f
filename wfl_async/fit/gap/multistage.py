"""A GAP fitted in stages, wfl 0.3.5's ``wfl.fit.gap.multistage.fit`` interface.

Each stage adds descriptors (e.g. a 2-body term, then SOAP) and is one simple ``gap_fit``; a
stage's ``delta`` is the mean absolute energy error of the previous stage per descriptor (the
first stage: of the energies less the isolated-atom ``e0``), as in wfl. ``params``::

    {"stages": [{"descriptors": [{"descriptor": {...}, "fit": {...}, "count_cutoff": 2.4}],
                 "error_scale_factor": 10.0}, ...],
     "gap_params": {"default_sigma": [...], ...},        # added to every stage's gap_fit line
     "delta_factors": [...], "core_ip_args": "...", "core_ip_file": "..."}   # optional

The whole fit is one queued job when ``WFL_GAP_MULTISTAGE_FIT_REMOTEINFO`` (or ``remote_info=``,
or ``WFL_EXPYRE_INFO``) selects it; then ``run_dir`` comes back from the job. Otherwise it runs
here, and each stage's simple fit is its own queued job if ``WFL_GAP_SIMPLE_FIT_REMOTEINFO``
selects it. :func:`prep_params` fills in each stage's descriptors from templates and the
species' length scales (universal SOAP hyperparameters included), as wfl's does.
"""

from __future__ import annotations

import io
import sys
import tempfile
from collections.abc import Iterable, Mapping
from copy import deepcopy
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import ase.io
import numpy as np
import yaml
from ase.atoms import Atoms

from ...autoparallelize.expyre_info import caller_stack_labels
from ...autoparallelize.remoteinfo import RemoteInfo
from ...configset import ConfigSet
from ...descriptor_heuristics import descriptor_2brn_uniform_file, descriptors_from_length_scales
from ...errors import ConfigurationError
from ...utils.misc import yaml_safe
from ...utils.quip_cli_strings import dict_to_quip_str
from .._queued import IGNORE, FitJob, fit_remote_info, run_fit_jobs, unpack_outputs
from .simple import readable_potential, run_gap_fit

__all__ = ["ENV_VAR", "GAP_xml_modify_label", "fit", "max_cutoff", "prep_params"]

ENV_VAR = "WFL_GAP_MULTISTAGE_FIT_REMOTEINFO"

GAP_fit_properties = ["energy", "forces", "virial", "hessian", "stress"]

_SIGMAS = ["energy_sigma", "force_sigma", "virial_sigma", "hessian_sigma"]

_INT32_MAX = int(np.iinfo(np.int32).max)


def prep_params(Zs: Iterable[int], length_scales: Mapping[int, Mapping[str, Any]],  # noqa: N803 (wfl's names)
                GAP_template: Mapping[str, Any] | str | Path, spacing: float = 1.5, no_extra_inner: bool = False,
                no_extra_outer: bool = False, sharpness: float = 1.0) -> dict[str, Any]:
    """The multistage ``params`` with every stage's descriptors made for the species ``Zs`` (wfl's ``prep_params``).

    :param Zs: atomic numbers of the system
    :param length_scales: ``{Z: {"bond_len": [length, source], ...}}`` per species
    :param GAP_template: the params (or a YAML file of them) whose stages' descriptors are
        templates (see :mod:`wfl_async.descriptor_heuristics`); not changed
    :param spacing, no_extra_inner, no_extra_outer, sharpness: universalSOAP's ``SOAP_hypers``
        arguments, used by ``add_species='manual_universal_SOAP'`` templates
    :raises ConfigurationError: a universal SOAP template without the universalSOAP package, or
        a bad template (unknown ``add_species``, a species without a bond length)
    """
    if isinstance(GAP_template, Mapping):
        params = deepcopy(dict(GAP_template))
    else:
        with open(GAP_template) as fin:
            params = yaml.safe_load(fin)
    _check_params(params)
    species = sorted({int(z) for z in Zs})
    hypers = None
    if any(entry.get("add_species") == "manual_universal_SOAP" for stage in params["stages"]
           for entry in stage["descriptors"]):
        try:
            from universalSOAP import SOAP_hypers
        except ModuleNotFoundError:
            raise ConfigurationError("a descriptor template has add_species='manual_universal_SOAP', which needs "
                                     "the universalSOAP package: pip install universalSOAP") from None
        try:
            hypers = SOAP_hypers(species, length_scales, spacing, no_extra_inner, no_extra_outer, sharpness=sharpness)
        except KeyError as exc:  # wfl swallows this and fails later without saying why
            raise ConfigurationError(f"universal SOAP hyperparameters need {exc} in length_scales for every species "
                                     f"(e.g. {{Z: {{'bond_len': [2.9, 'src'], 'min_bond_len': [2.4, 'src']}}}})"
                                     ) from None
    for i_stage, stage in enumerate(params["stages"]):
        # each stage entry is {"descriptor": template, "fit": ..., "add_species": ...}: the species
        # spread works on the whole entry, so its "descriptor" and "fit" are both filled in
        entries, _ = descriptors_from_length_scales(stage["descriptors"], species, length_scales, SOAP_hypers=hypers)
        descriptor_2brn_uniform_file(entries, ident=f"_stage_{i_stage}")
        stage["descriptors"] = entries
    return params


def max_cutoff(params: Mapping[str, Any]) -> float:
    """The largest descriptor cutoff (``cutoff``, or ``rcut_hard`` for turboSOAP) over every stage."""
    cutoffs = [0.0]
    for stage in params["stages"]:
        for entry in stage["descriptors"]:
            descriptor = entry["descriptor"]
            cutoffs.append(float(descriptor["cutoff"] if "cutoff" in descriptor else descriptor["rcut_hard"]))
    return max(cutoffs)


def fit(fitting_configs: Iterable[Atoms] | ConfigSet, GAP_name: str, params: Mapping[str, Any],
        ref_property_prefix: str = "REF_", seeds: list[int] | None = None, skip_if_present: bool = False,
        run_dir: str | Path = ".", num_committee: int = 0, committee_extra_seeds: list[int] | None = None,
        committee_name_postfix: str = ".committee_", verbose: bool = False,
        remote_info: RemoteInfo | Mapping[str, Any] | str | None = None, remote_label: str | None = None,
        wait_for_results: bool = True) -> tuple[Any, Any] | None:
    """Fit a GAP stage by stage; return ``(final_GAP_file, final_GAP_name)`` (lists for a committee).

    :param fitting_configs: configurations with ``<ref_property_prefix>energy`` etc., including one
        ``config_type=isolated_atom`` (non-periodic) per species for its ``e0``
    :param GAP_name: the potential's label and file stem (``<run_dir>/<GAP_name>.xml``)
    :param params: stages and shared ``gap_fit`` parameters (module docstring)
    :param seeds: ``rnd_seed`` of each stage (default: drawn at random, as in wfl; pass them for a
        rerun to re-attach to the same jobs)
    :param num_committee: refit the last stage this many times with other seeds (a committee)
    :param remote_info: RemoteInfo (or its fields) for one job; ``'_IGNORE'`` fits here
    :param wait_for_results: False submits the job and returns None
    :raises ConfigurationError: malformed params, missing isolated atoms
    """
    run_dir = Path(run_dir)
    names = ([f"{GAP_name}{committee_name_postfix}{i}" for i in range(num_committee)] if num_committee > 0
             else [GAP_name])
    files = [str(run_dir / f"{name}.xml") for name in names]
    if skip_if_present and all(readable_potential(f) for f in files):
        return (files, names) if num_committee > 0 else (files[0], names[0])
    _check_params(params)
    info = fit_remote_info(remote_info, remote_label, ENV_VAR, caller_stack_labels(sys._getframe(0)))
    kwargs: dict[str, Any] = {"GAP_name": GAP_name, "params": dict(params), "ref_property_prefix": ref_property_prefix,
              "seeds": seeds, "skip_if_present": skip_if_present, "num_committee": num_committee,
              "committee_extra_seeds": committee_extra_seeds, "committee_name_postfix": committee_name_postfix,
              "verbose": verbose}
    if info is None:
        return _fit_here(fitting_configs, run_dir=run_dir, remote_info=remote_info, remote_label=remote_label,
                         **kwargs)
    output_dir = f"_{GAP_name}.multistage_files"
    with tempfile.TemporaryDirectory(prefix="wfl_async_gap_") as scratch:
        database = Path(scratch) / f"{GAP_name}.multistage_database.extxyz"
        ase.io.write(database, list(fitting_configs), format="extxyz")
        job = FitJob(info, _fit_in_job, dict(kwargs, fitting_configs=database.name, run_dir=output_dir),
                     output_dir, input_files=[database],
                     env_defaults={"WFL_GAP_FIT_OMP_NUM_THREADS": "$EXPYRE_NUM_CORES_PER_NODE",
                                   "WFL_NUM_PYTHON_SUBPROCESSES": "$EXPYRE_NUM_CORES_PER_NODE"})
        values = run_fit_jobs([job], wait_for_results)
    if values is None:
        return None
    unpack_outputs(output_dir, {"*": run_dir})
    return (files, names) if num_committee > 0 else (files[0], names[0])


def _fit_in_job(fitting_configs: str, run_dir: str, **kwargs: Any) -> Any:
    """What the queued job runs: the whole fit here, its simple fits in this job too."""
    return _fit_here(ConfigSet(fitting_configs), run_dir=Path(run_dir), remote_info=IGNORE, remote_label=None,
                     **kwargs)


def _fit_here(fitting_configs: Iterable[Atoms] | ConfigSet, GAP_name: str, params: Mapping[str, Any],
              ref_property_prefix: str, seeds: list[int] | None, skip_if_present: bool, run_dir: Path,
              num_committee: int, committee_extra_seeds: list[int] | None, committee_name_postfix: str,
              verbose: bool, remote_info: Any, remote_label: str | None) -> tuple[Any, Any]:
    from quippy.potential import Potential

    run_dir.mkdir(parents=True, exist_ok=True)
    stages = params["stages"]
    names = ([f"{GAP_name}{committee_name_postfix}{i}" for i in range(num_committee)] if num_committee > 0
             else [GAP_name])
    files = [str(run_dir / f"{name}.xml") for name in names]
    configs = _through_extxyz(fitting_configs)
    for at in configs:
        at.calc = None
        at.info.setdefault("config_type", "_NONE_")
    energy_key = ref_property_prefix + "energy"
    e0s = _isolated_atom_energies(configs, energy_key)
    line_kwargs: dict[str, Any] = {f"{k.replace('forces', 'force')}_parameter_name": ref_property_prefix + k
                                   for k in GAP_fit_properties}
    if "core_ip_args" in params:
        line_kwargs["core_ip_args"] = "{" + str(params["core_ip_args"]) + "}"
    if "core_ip_file" in params:
        line_kwargs["core_param_file"] = params["core_ip_file"]
    core = (Potential(args_str=params.get("core_ip_args"), param_filename=params.get("core_ip_file"))
            if "core_ip_args" in params or "core_ip_file" in params else None)
    rng = np.random.default_rng()
    if seeds is None:
        seeds = [int(rng.integers(_INT32_MAX, dtype=np.int32)) for _ in stages]
    if num_committee > 0 and committee_extra_seeds is None:
        committee_extra_seeds = [int(rng.integers(_INT32_MAX, dtype=np.int32)) for _ in range(num_committee - 1)]
    keep = ([ref_property_prefix + k for k in GAP_fit_properties if k != "forces"] + _SIGMAS
            + ["_orig_" + s for s in _SIGMAS] + ["config_type"])

    descriptor_dicts: list[dict[str, Any]] = []
    skipped_previous = False
    database = None
    for i_stage, stage in enumerate(stages):
        gap_file = files[0] if i_stage == len(stages) - 1 else f"{run_dir / GAP_name}.stage_{i_stage}.xml"
        if skip_if_present and Path(gap_file).is_file():
            print(f"stage {i_stage} already done, skipping")
            skipped_previous = True
            continue
        previous = None
        if i_stage > 0:
            previous_file = f"{run_dir / GAP_name}.stage_{i_stage - 1}.xml"
            previous = Potential(param_filename=previous_file)
            if skipped_previous:
                with open(previous_file + ".descriptor_dicts.yaml") as fin:
                    descriptor_dicts = yaml.safe_load(fin)[:i_stage]
        for at in configs:  # only what gap_fit needs (its extxyz reader is strict)
            for key in [k for k in at.info if k not in keep]:
                del at.info[key]
        _scale_sigmas(configs, float(stage.get("error_scale_factor", 1.0)), exclude=("isolated_atom", "dimer"))
        database = run_dir / f"fitting_database.combined.{GAP_name}.stage_{i_stage}.extxyz"
        ase.io.write(database, configs, format="extxyz")

        delta = _stage_delta(configs, stage, energy_key, e0s, core, previous, verbose)
        if "delta_factors" in params:
            delta *= float(params["delta_factors"][i_stage])
        print(f"stage {i_stage}: delta {delta}")
        for entry in stage["descriptors"]:
            descriptor = deepcopy(entry["descriptor"])
            descriptor.update(entry["fit"])
            descriptor["delta"] = float(delta)
            if "add_species" in entry:
                descriptor["add_species"] = entry["add_species"]
            descriptor_dicts.append(descriptor)

        simple = deepcopy(dict(params.get("gap_params", {})))
        simple["_gap"] = descriptor_dicts
        simple.update(line_kwargs, gap_file=gap_file, rnd_seed=seeds[i_stage])
        with open(gap_file + ".descriptor_dicts.yaml", "w") as fout:
            yaml.safe_dump(descriptor_dicts, fout)
        with open(gap_file + ".fitting_dicts.yaml", "w") as fout:
            yaml.safe_dump(yaml_safe(simple), fout)
        run_gap_fit(ConfigSet(database), simple, stdout_file=run_dir / f"stdout.{GAP_name}.stage_{i_stage}.gap_fit",
                    verbose=verbose, remote_info=remote_info, remote_label=remote_label)

    GAP_xml_modify_label(files[0], new_label=names[0])
    with open(files[0] + ".fitting_dicts.yaml") as fin:
        simple = yaml.safe_load(fin)
    if database is None:
        database = run_dir / f"fitting_database.combined.{GAP_name}.stage_{len(stages) - 1}.extxyz"
    for i_committee in range(1, num_committee):
        if skip_if_present and Path(files[i_committee]).is_file():
            continue
        assert committee_extra_seeds is not None
        simple.update(gap_file=files[i_committee], rnd_seed=committee_extra_seeds[i_committee - 1])
        run_gap_fit(ConfigSet(database), simple,
                    stdout_file=run_dir / f"stdout.{GAP_name}{committee_name_postfix}{i_committee}.gap_fit",
                    verbose=verbose, remote_info=remote_info, remote_label=remote_label)
        GAP_xml_modify_label(files[i_committee], new_label=names[i_committee])
    return (files, names) if num_committee > 0 else (files[0], names[0])


def _through_extxyz(configs: Iterable[Atoms]) -> list[Atoms]:
    """The configurations as written to and read from extxyz, as a queued fit gets them (its
    database is a staged file): the deltas, computed from these, then agree to the last digit."""
    buffer = io.StringIO()
    ase.io.write(buffer, list(configs), format="extxyz")
    buffer.seek(0)
    return list(ase.io.iread(buffer, ":", format="extxyz"))


def _check_params(params: Mapping[str, Any]) -> None:
    stages = params.get("stages") if isinstance(params, Mapping) else None
    if not stages:
        raise ConfigurationError("params must hold a non-empty 'stages' list, each "
                                 "{'descriptors': [{'descriptor': {...}, 'fit': {...}}]}")
    for i, stage in enumerate(stages):
        for entry in stage.get("descriptors") or [None]:
            if not isinstance(entry, Mapping) or "descriptor" not in entry or "fit" not in entry:
                raise ConfigurationError(f"params['stages'][{i}]['descriptors'] entries must be dicts with "
                                         f"'descriptor' and 'fit' keys, got {entry!r}")


def _isolated_atom_energies(configs: list[Atoms], energy_key: str) -> dict[int, float]:
    e0s: dict[int, float] = {}
    for at in configs:
        if at.info["config_type"] != "isolated_atom":
            continue
        z = int(at.numbers[0])
        if z in e0s:
            raise ConfigurationError(f"more than one config_type=isolated_atom configuration for Z={z}")
        if any(at.pbc):
            raise ConfigurationError(f"the config_type=isolated_atom configuration for Z={z} must have pbc False")
        e0s[z] = at.info[energy_key] / len(at)
    missing = sorted({int(z) for at in configs for z in at.numbers} - set(e0s))
    if missing:
        raise ConfigurationError(f"no config_type=isolated_atom configuration (for e0) for Z {missing}; add one "
                                 f"non-periodic single-atom configuration with {energy_key} per species")
    return e0s


def _scale_sigmas(configs: list[Atoms], factor: float, exclude: tuple[str, ...]) -> None:
    """Per-config sigmas times this stage's factor, from their original values (wfl's scale_orig)."""
    if factor == 1.0:
        return
    for at in configs:
        if at.info.get("config_type") in exclude:
            continue
        for sigma in _SIGMAS:
            if sigma in at.info:
                at.info.setdefault("_orig_" + sigma, at.info[sigma])
                original = float(at.info["_orig_" + sigma])
                at.info[sigma] = original * factor


def _stage_delta(configs: list[Atoms], stage: Mapping[str, Any], energy_key: str, e0s: dict[int, float],
                 core: Any, previous: Any, verbose: bool) -> float:
    """Mean absolute energy error (previous stage, or energy less e0 and core) per descriptor."""
    from quippy.descriptors import Descriptor

    counters = [(Descriptor(dict_to_quip_str(entry["descriptor"])), entry.get("count_cutoff"))
                for entry in stage["descriptors"]]
    count = 0.0
    errors = []
    for at in configs:
        if energy_key not in at.info:
            continue
        count += sum(d.sizes(at, cutoff=c)[0] for d, c in counters)
        reference = at.info[energy_key]
        if previous is None:
            if core is not None:
                at.calc = core
                reference -= at.get_potential_energy()
            errors.append(reference - sum(e0s[int(z)] for z in at.numbers))
        else:
            at.calc = previous
            errors.append(at.get_potential_energy() - reference)
        at.calc = None
    if count <= 0:
        raise ConfigurationError("the stage's descriptors find nothing to count in the fitting configurations")
    if verbose:
        print(f"descriptor count {count}, energy MAE {np.mean(np.abs(errors))}")
    # 8 significant digits: the last digits of the sum depend on the OpenMP thread count and order
    # of the quippy energies, so a fit here and the same fit in a queued job would otherwise differ
    return float(f"{np.sum(np.abs(errors)) / count:.8g}")


def GAP_xml_modify_label(GAPfile: str | Path, new_label: str | None = None) -> str | None:  # noqa: N802 (wfl's name)
    """Set the potential's label (its XML root tag and first ``Potential`` label); return the label."""
    tree = ElementTree.parse(GAPfile)
    root = tree.getroot()
    potential = tree.find("Potential")
    if new_label is None:
        return potential.get("label") if potential is not None else None
    root.tag = new_label
    if potential is not None:
        potential.set("label", new_label)
    tree.write(GAPfile)
    return new_label
