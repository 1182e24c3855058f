"""QUIP command-line strings from dicts (wfl's ``wfl.utils.quip_cli_strings``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ase.io.extxyz import key_val_dict_to_str

__all__ = ["dict_to_quip_str"]


def _joined(separator: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return separator.join(str(item) for item in value)
    except TypeError:
        return str(value)


def dict_to_quip_str(d: Mapping[str, Any], list_brackets: str = "{}") -> str:
    """``key=value`` pairs, space separated, as QUIP's command-line parser reads them.

    Lists become ``key={v1 v2}`` (``list_brackets`` gives the brackets, ``{{}}`` inside a
    ``gap={...}`` descriptor), dicts ``key=k1:v1:k2:v2``, and other values are encoded by
    ASE's extxyz key=value writer (booleans ``T``/``F``, strings with spaces quoted).
    """
    if len(list_brackets) % 2:
        raise ValueError(f"list_brackets {list_brackets!r} must be an opening and a closing half of equal length")
    half = len(list_brackets) // 2
    parts = []
    for key, value in d.items():
        if isinstance(value, list):
            parts.append(f"{key}={list_brackets[:half]}{' '.join(str(v) for v in value)}{list_brackets[half:]}")
        elif isinstance(value, dict):
            parts.append(f"{key}=" + ":".join(f"{k}:{_joined(':', v)}" for k, v in value.items()))
        else:
            parts.append(key_val_dict_to_str({key: value}))
    return " ".join(parts)
