"""Small helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase.atoms import Atoms

__all__ = ["atoms_to_list", "yaml_safe"]


def atoms_to_list(atoms: Atoms | Any) -> list[Atoms] | Any:
    """A single Atoms as a one-element list; anything else unchanged."""
    return [atoms] if isinstance(atoms, Atoms) else atoms


def yaml_safe(item: Any, tuple_as_string: bool = False) -> Any:
    """``item`` with numpy arrays/scalars and paths as plain types, so ``yaml.safe_dump`` takes it.

    ``tuple_as_string`` writes tuples as ``"(a, b)"`` (what ACE1pack's parameter reader expects,
    as wfl writes them); otherwise tuples become lists.
    """
    if isinstance(item, np.ndarray):
        return yaml_safe(item.tolist(), tuple_as_string)
    if isinstance(item, dict):
        return {yaml_safe(k, tuple_as_string): yaml_safe(v, tuple_as_string) for k, v in item.items()}
    if isinstance(item, tuple) and tuple_as_string:
        return "(" + ", ".join(str(v) for v in item) + ")"
    if isinstance(item, list | tuple):
        return [yaml_safe(v, tuple_as_string) for v in item]
    if isinstance(item, Path):
        return str(item)
    if isinstance(item, np.generic):
        return item.item()
    return item
