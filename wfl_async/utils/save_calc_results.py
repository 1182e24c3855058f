"""Save a calculator's results into ``Atoms.info``/``arrays`` under a prefix (wfl's layout).

Stored results survive extxyz files and pickling without the calculator, and the prefix
says which calculation produced them (``EMT_energy``, ``last_op__optimize_forces``).
"""

from __future__ import annotations

import re
from typing import Any

from ase.atoms import Atoms
from ase.calculators.calculator import PropertyNotImplementedError, PropertyNotPresent, all_properties
from ase.calculators.singlepoint import SinglePointCalculator
from ase.outputs import ArrayProperty, all_outputs

__all__ = ["at_copy_save_calc_results", "per_atom_properties", "per_config_properties", "save_calc_results"]

# which properties are per atom: ASE's output shapes, for properties a SinglePointCalculator takes
per_atom_properties = [k for k, v in all_outputs.items()
                       if k in all_properties and isinstance(v, ArrayProperty) and v.shapespec[0] == "natoms"]
per_config_properties = [k for k in all_outputs if k in all_properties and k not in per_atom_properties]


def save_calc_results(atoms: Atoms, *, prefix: str | None, properties: list[str] | None) -> None:
    """Move ``atoms.calc``'s results into ``info``/``arrays`` as ``prefix + name`` (or a SinglePointCalculator).

    :param prefix: key prefix; None stores a SinglePointCalculator instead; "" is refused
    :param properties: properties to save; None saves every key of ``atoms.calc.results``
    :raises ValueError: empty prefix
    :raises PropertyNotPresent: a requested property was not calculated
    """
    if atoms.info.pop("__calculator_results_saved", False):
        return  # the calculator saved them itself
    if isinstance(prefix, str) and not prefix:
        raise ValueError("Refusing to save calculator results into info/arrays fields with no prefix,"
                         " too much chance of confusion with ASE extxyz reading/writing and conversion"
                         " to SinglePointCalculator")
    calc: Any = atoms.calc
    if properties is None:
        properties = list(calc.results.keys())
    if prefix is not None:
        for name in per_config_properties:
            atoms.info.pop(prefix + name, None)
        for name in per_atom_properties:
            if prefix + name in atoms.arrays:
                del atoms.arrays[prefix + name]

    config_results: dict[str, Any] = {}
    atoms_results: dict[str, Any] = {}
    for name in properties:
        if name not in calc.results:
            raise PropertyNotPresent(f"{name} is not one of the calculated properties ({calc.results.keys()}).")
        if name == "energy":
            try:
                config_results["energy"] = atoms.get_potential_energy(force_consistent=True)
            except PropertyNotImplementedError:
                config_results["energy"] = atoms.get_potential_energy()
            continue
        if name in per_config_properties:
            config_results[name] = calc.results.get(name)
        if name in per_atom_properties:
            atoms_results[name] = calc.results.get(name)
    if prefix is not None and hasattr(calc, "converged"):
        config_results["converged"] = calc.converged
    extra = getattr(calc, "extra_results", None)
    if extra is not None:
        if prefix is None and (extra.get("config") or extra.get("atoms")):
            raise ValueError("Refusing to save calculator results into info/arrays fields with no prefix,"
                             " too much chance of confusion with ASE extxyz reading/writing and conversion"
                             " to SinglePointCalculator")
        config_results.update(extra.get("config", {}))
        atoms_results.update(extra.get("atoms", {}))
        if "relaxed_positions" in extra:
            atoms.set_positions(extra["relaxed_positions"])

    if prefix is None:
        atoms.calc = SinglePointCalculator(atoms, **{k: v for k, v in config_results.items() if k in all_properties},
                                           **{k: v for k, v in atoms_results.items() if k in all_properties})
        return
    atoms.calc = None
    for name, value in config_results.items():
        atoms.info[prefix + name] = value
    for name, value in atoms_results.items():
        atoms.new_array(prefix + name, value)


def at_copy_save_calc_results(at: Atoms, prefix: str | None, properties: list[str] | None = None) -> Atoms:
    """A copy of ``at`` with its calculator's results saved under ``prefix``.

    If ``prefix`` is ``"<common>__..."``, every other ``"<common>__"`` key is dropped first,
    so only the last operation's results remain (e.g. ``last_op__``).
    """
    copy = at.copy()
    copy.calc = at.calc
    if prefix is not None and "__" in prefix:
        common = re.sub(r"__.*", "__", prefix)
        for key in [k for k in copy.info if k.startswith(common)]:
            del copy.info[key]
        for key in [k for k in copy.arrays if k.startswith(common)]:
            del copy.arrays[key]
    save_calc_results(copy, prefix=prefix, properties=properties)
    return copy
