"""calculate: evaluate configurations with any ASE calculator, results into info/arrays."""

from __future__ import annotations

import sys
import traceback
import warnings
from collections.abc import Mapping
from typing import Any

from ase.atoms import Atoms
from ase.calculators.calculator import all_changes

from ..autoparallelize.operation import AutoparaOperation
from ..utils.misc import atoms_to_list
from ..utils.parallel import construct_calculator_picklesafe
from ..utils.save_calc_results import save_calc_results

__all__ = ["calculate"]

_PER_CONFIG_CALC_KEYS = ("WFL_CALCULATOR_INITIALIZER", "WFL_CALCULATOR_ARGS", "WFL_CALCULATOR_KWARGS")


def _calculator_name(calculator: Any) -> str:
    if isinstance(calculator, tuple):
        return str(calculator[0].__name__)
    return type(calculator).__name__


def _per_config_calculator(at: Atoms, calculator: Any) -> Any:
    try:
        initializer = at.info.get("WFL_CALCULATOR_INITIALIZER", calculator[0])
        args = at.info.get("WFL_CALCULATOR_ARGS", calculator[1])
        kwargs = dict(calculator[2] or {})
        kwargs.update(at.info.get("WFL_CALCULATOR_KWARGS", {}))
        return construct_calculator_picklesafe((initializer, args, kwargs))
    except Exception as exc:
        raise TypeError("calculators.generic.calculate got WFL_CALCULATOR_INITIALIZER, _ARGS, or _KWARGS "
                        "but constructor failed, most likely because calculator wasn't a tuple (TypeError) "
                        "or original tuple had invalid element that wasn't overridden by `Atoms.info` entry. "
                        f"Constructor exception was '{exc}'") from exc


def _run_autopara_wrappable(atoms: Atoms | list[Atoms], calculator: Any, properties: list[str] | None = None,
                            output_prefix: str | None = "_auto_", verbose: bool = False,
                            raise_calc_exceptions: bool = False) -> Atoms | list[Atoms]:
    """Evaluate configurations with a calculator; store results in info/arrays or a SinglePointCalculator.

    Default ``num_inputs_per_python_subprocess`` is 10, so one calculator serves many
    configurations, unless the calculator class has ``wfl_generic_default_autopara_info``.
    ``Atoms.info`` entries ``WFL_CALCULATOR_INITIALIZER``/``_ARGS`` replace, and
    ``WFL_CALCULATOR_KWARGS`` updates, the recipe for that configuration's own calculator.

    :param atoms: input configuration(s)
    :param calculator: ASE calculator, or ``(constructor, args, kwargs)`` to build one in the
        process that uses it (must be a tuple if per-configuration overrides are used)
    :param properties: properties to calculate (default energy, forces, stress; stress is
        dropped for fully non-periodic configurations)
    :param output_prefix: prefix of the info/arrays keys; ``"_auto_"`` means the calculator
        class name plus ``_`` (e.g. ``EMT_``); None stores a SinglePointCalculator
    :param verbose: verbose output
    :param raise_calc_exceptions: raise calculator errors instead of marking the
        configuration with ``<prefix>calculation_failed``
    """
    if properties is None:
        properties = ["energy", "forces", "stress"]
    try:
        default_calculator = construct_calculator_picklesafe(calculator)
        failure = None
    except Exception as exc:  # may still be fine if every config carries its own recipe
        default_calculator = None
        failure = f"({exc})\n{traceback.format_exc()}"

    if output_prefix == "_auto_":
        output_prefix = _calculator_name(calculator) + "_"

    outputs = []
    for at in atoms_to_list(atoms):
        calc = default_calculator
        if any(key in at.info for key in _PER_CONFIG_CALC_KEYS):
            calc = _per_config_calculator(at, calculator)
        if calc is None:
            raise ValueError(f"Failed to construct calculator, original attempt's exception was '{failure}'")
        at.calc = calc

        use_properties = list(properties)
        if not any(at.pbc):
            use_properties = [p for p in use_properties if p not in ("stress", "stresses")]

        # some calculators (e.g. file-based ones changing pbc) save their own results under it
        at.info["__calculator_output_prefix"] = output_prefix
        at.info.pop(f"{output_prefix}calculation_failed", None)
        try:
            # explicit system_changes: some calculators have no default for it
            at.calc.calculate(at, properties=use_properties, system_changes=all_changes)
            succeeded = True
        except Exception as exc:
            if raise_calc_exceptions:
                raise
            succeeded = False
            if "pytest" in sys.modules:
                print(f"WARNING: calculation failed with exception {exc}\n{traceback.format_exc()}")
            warnings.warn(f"calculation failed with exception {exc}\n{traceback.format_exc()}", stacklevel=2)
            at.info[f"{output_prefix}calculation_failed"] = True
        del at.info["__calculator_output_prefix"]

        results = getattr(at.calc, "results", None)
        if isinstance(results, dict):
            results.pop("virial", None)
        if succeeded:
            save_calc_results(at, prefix=output_prefix, properties=use_properties)
        else:
            at.calc = None
        outputs.append(at)

    return outputs[0] if isinstance(atoms, Atoms) else outputs


def _default_autopara_info(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Mapping[str, Any]:
    calculator = kwargs.get("calculator", args[0] if args else None)
    return getattr(calculator, "wfl_generic_default_autopara_info", {"num_inputs_per_python_subprocess": 10})


calculate = AutoparaOperation(_run_autopara_wrappable, name="calculate", module=__name__,
                              default_autopara_info=_default_autopara_info)
