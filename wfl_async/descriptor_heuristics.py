"""Descriptors for every species from templates and length scales (wfl's ``wfl.descriptor_heuristics``).

A template is a descriptor dict whose values may be ``"_EVAL_ expr"`` strings (see
:mod:`wfl_async.utils.replace_eval_in_strs`) and whose ``add_species`` says how it spreads
over the species of the system:

* ``"auto"`` (default): one descriptor, gap_fit adds the species; ``{BOND_LEN_MAX}`` is known;
* ``False``: one descriptor as written, ``add_species=False`` for gap_fit;
* ``"manual_Z_pair"``: one per pair Z1 <= Z2, with ``{Z1}``, ``{Z2}``, ``{BOND_LEN_Z1_Z2}``;
* ``"manual_Zcenter"``: one per centre species, with ``{Zcenter}``, ``{nZ}``, ``{Zs}``,
  ``{BOND_LEN_Z}``, ``{BOND_LEN_Z_MAX}``;
* ``"manual_universal_SOAP"``: one per centre species and universal-SOAP hyperparameter set,
  with ``{R_CUT}``, ``{R_TRANS}``, ``{ATOM_SIGMA}`` and the centre's keys.

Length scales are ``{Z: {"bond_len": [length, source], ...}}``; a pair's length is the mean of
its two species'. Floats are rounded to 2 significant figures, as in wfl.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .utils.replace_eval_in_strs import replace_eval_in_strs

__all__ = ["descriptor_2brn_uniform_file", "descriptors_from_length_scales", "len_scale_pair"]

LengthScales = Mapping[int, Mapping[str, Sequence[Any]]]
SoapHypers = Mapping[int, Sequence[Mapping[str, float]]]

_SIG_FIGS = 2


def len_scale_pair(length_scales: LengthScales, kind: str, Z1: int, Z2: int) -> float:  # noqa: N803 (wfl's names)
    """The ``kind`` length scale of a Z1-Z2 pair: the mean of the two species' own."""
    return 0.5 * (length_scales[Z1][kind][0] + length_scales[Z2][kind][0])


def _filled(template: Mapping[str, Any], keys: Mapping[str, Any], add_species: bool | None) -> dict[str, Any]:
    descriptor = replace_eval_in_strs(dict(template), keys, n_float_sig_figs=_SIG_FIGS)
    if add_species is not None:
        descriptor["add_species"] = add_species
    return descriptor


def descriptors_from_length_scales(descriptors: Mapping[str, Any] | Sequence[Mapping[str, Any]], Zs: Iterable[int],
                                   length_scales: LengthScales, SOAP_hypers: SoapHypers | None = None,  # noqa: N803
                                   ) -> tuple[Any, Any]:
    """Every descriptor the templates make for the species ``Zs`` (see the module doc).

    :returns: ``(descriptors, their species)``: a list of dicts and, per descriptor, its
        ``(Z1, Z2)``, ``Zcenter``, ``Zs`` or None; for a single dict template that spreads
        over nothing, that one dict and None (as wfl returns)
    :raises ConfigurationError: an unknown ``add_species``, universal SOAP without its hyperparameters,
        a species without a ``bond_len``
    """
    species = sorted({int(z) for z in Zs})
    missing = [z for z in species if "bond_len" not in length_scales.get(z, {})]
    if missing:
        raise ConfigurationError(f"length_scales has no 'bond_len' for Z {missing}; give "
                                 f"{{Z: {{'bond_len': [length, source]}}}} for every species")
    templates = [descriptors] if isinstance(descriptors, Mapping) else list(descriptors)
    bond_max = max(length_scales[z]["bond_len"][0] for z in species)
    made: list[dict[str, Any]] = []
    made_species: list[Any] = []
    spread = False
    for template in templates:
        template = dict(template)
        mode = template.pop("add_species", "auto")
        if mode == "auto":
            made.append(_filled(template, {"BOND_LEN_MAX": bond_max}, None))
            made_species.append(None)
        elif mode is False:
            made.append(_filled(template, {"BOND_LEN_MAX": bond_max}, False))
            made_species.append(made[-1].get("Zs"))
        elif mode == "manual_Z_pair":
            spread = True
            for i, z1 in enumerate(species):
                for z2 in species[i:]:
                    keys = {"BOND_LEN_Z1_Z2": len_scale_pair(length_scales, "bond_len", z1, z2), "Z1": z1, "Z2": z2}
                    made.append(_filled(template, keys, False))
                    made_species.append((z1, z2))
        elif mode in ("manual_Zcenter", "manual_universal_SOAP"):
            spread = True
            if mode == "manual_universal_SOAP" and SOAP_hypers is None:
                raise ConfigurationError("a descriptor has add_species='manual_universal_SOAP' but no SOAP_hypers "
                                         "were given (install universalSOAP, or give SOAP_hypers)")
            for zc in species:
                centre: dict[str, Any] = {"Zcenter": zc, "nZ": len(species), "Zs": list(species)}
                if mode == "manual_Zcenter":
                    keys = {**centre, "BOND_LEN_Z": length_scales[zc]["bond_len"][0],
                            "BOND_LEN_Z_MAX": max(len_scale_pair(length_scales, "bond_len", zc, z) for z in species)}
                    made.append(_filled(template, keys, False))
                    made_species.append(zc)
                    continue
                assert SOAP_hypers is not None
                for hypers in SOAP_hypers[zc]:
                    keys = {**centre, "R_CUT": hypers["cutoff"], "R_TRANS": hypers["cutoff_transition_width"],
                            "ATOM_SIGMA": hypers["atom_gaussian_width"]}
                    made.append(_filled(template, keys, False))
                    made_species.append(zc)
        else:
            raise ConfigurationError(f"unknown add_species {mode!r}: use 'auto', False, 'manual_Z_pair', "
                                     f"'manual_Zcenter' or 'manual_universal_SOAP'")
    if isinstance(descriptors, Mapping) and not spread:
        return made[0], None
    return made, made_species


def descriptor_2brn_uniform_file(descriptor: Any, ident: str = "", desc_i: int = 0) -> int:
    """Write a sparse-points file for each 2-body polynomial descriptor marked ``'_2BRN_UNIFORM_FILE_'``.

    Each such dict (anywhere in the nested ``descriptor``) needs ``n_sparse``, ``exponents`` and
    ``cutoff``; its points are uniform in r up to ``cutoff - cutoff_transition_width``, written as
    ``input_sparsepoints<ident>_desc_<i>`` in the current directory (each point as ``1.0`` then
    ``r**exponent`` per exponent), and the dict is changed to ``sparse_method='file'`` with that
    file's absolute path. (wfl 0.3.5 takes the transition width from ``cutoff``, which makes
    every point 0; here it is ``cutoff_transition_width``, 0 if absent.)

    :returns: the next descriptor number
    """
    if isinstance(descriptor, dict):
        if descriptor.get("sparse_method") == "_2BRN_UNIFORM_FILE_":
            n_sparse, cutoff = int(descriptor["n_sparse"]), float(descriptor["cutoff"])
            width = float(descriptor.get("cutoff_transition_width", 0.0))
            points = [(x + 1) * (cutoff - width) / n_sparse for x in range(n_sparse)]
            path = Path(os.getcwd()) / f"input_sparsepoints{ident}_desc_{desc_i}"
            path.write_text("".join("1.0\n" + "".join(f"{r ** e}\n" for e in descriptor["exponents"])
                                    for r in points))
            descriptor["sparse_method"] = "file"
            descriptor["sparse_file"] = str(path)
            return desc_i + 1
        for value in descriptor.values():
            desc_i = descriptor_2brn_uniform_file(value, ident, desc_i)
    elif isinstance(descriptor, list):
        for value in descriptor:
            desc_i = descriptor_2brn_uniform_file(value, ident, desc_i)
    return desc_i
