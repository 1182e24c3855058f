"""``_EVAL_`` expressions in nested parameters (wfl's ``wfl.utils.replace_eval_in_strs``).

Parameter files (e.g. multistage GAP templates) write values as ``"_EVAL_ {R_CUT} * 2"``:
each such string is formatted with ``replacements`` and then evaluated as a Python expression.
Only for trusted parameter files: ``eval`` runs whatever the string says.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from .round_sig_figs import round_sig_figs

__all__ = ["replace_eval_in_strs"]

_PREFIX = "_EVAL_ "


def replace_eval_in_strs(obj: Any, replacements: Mapping[str, Any], n_float_sig_figs: int | None = None) -> Any:
    """``obj`` with every ``"_EVAL_ expr"`` string (in nested lists, tuples, dicts) replaced by ``eval(expr)``.

    :param replacements: ``str.format`` keywords applied to each expression first
    :param n_float_sig_figs: round float results to this many significant figures
    """
    if isinstance(obj, str):
        if not obj.startswith(_PREFIX):
            return obj
        value = eval(obj[len(_PREFIX):].format(**replacements))  # noqa: S307 (the documented purpose)
        if n_float_sig_figs is not None and isinstance(value, float):
            value = float(round_sig_figs(value, n_float_sig_figs))
        return value
    if isinstance(obj, list):
        return [replace_eval_in_strs(item, replacements, n_float_sig_figs) for item in obj]
    if isinstance(obj, tuple):
        return tuple(replace_eval_in_strs(item, replacements, n_float_sig_figs) for item in obj)
    if isinstance(obj, dict):
        return {k: replace_eval_in_strs(v, replacements, n_float_sig_figs) for k, v in obj.items()}
    if not isinstance(obj, bool | int | float) and obj is not None:
        warnings.warn(f"replace_eval_in_strs got unknown type {type(obj).__name__}, left as it is", stacklevel=2)
    return obj
