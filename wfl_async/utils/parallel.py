"""Build a calculator inside the process that uses it.

A ``(constructor, args, kwargs)`` recipe pickles cheaply and safely where a live
calculator (open files, C handles) may not, so operations accept either.
"""

from __future__ import annotations

from typing import Any

from ase.calculators.calculator import BaseCalculator, Calculator

__all__ = ["construct_calculator_picklesafe"]


def construct_calculator_picklesafe(calculator: Any) -> Any:
    """Return ``calculator`` if it is one, else build it from ``(constructor, args, kwargs)``.

    :raises RuntimeError: not a calculator and not a valid 3-tuple recipe
    """
    if isinstance(calculator, (BaseCalculator, Calculator)):
        return calculator
    if not isinstance(calculator, (tuple, list)) or len(calculator) != 3:
        raise RuntimeError(f"calculator '{calculator}' must be (calc_constructor, args, kwargs)")
    constructor, args, kwargs = calculator
    if not callable(constructor):
        raise RuntimeError(f"calculator '{calculator}' : first element is not callable, cannot construct a calculator")
    return constructor(*(args or []), **(kwargs or {}))
