"""Small helpers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase.atoms import Atoms

__all__ = ["atoms_to_list", "chunks", "dict_tuple_keys_to_str", "yaml_safe"]


def atoms_to_list(atoms: Atoms | Any) -> list[Atoms] | Any:
    """A single Atoms as a one-element list; anything else unchanged."""
    return [atoms] if isinstance(atoms, Atoms) else atoms


def chunks(arr: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    """Successive slices of ``arr`` of length ``n`` (the last may be shorter)."""
    for i in range(0, len(arr), n):
        yield arr[i:i + n]


def dict_tuple_keys_to_str(error_dict: Mapping[Any, Any]) -> dict[Any, Any]:
    """Tuple keys written ``"(a,b)"``, so the dict can be saved as JSON."""
    return {("(" + ",".join(str(k) for k in key) + ")" if isinstance(key, tuple) else key): value
            for key, value in error_dict.items()}


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
