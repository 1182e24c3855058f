"""Small helpers."""

from __future__ import annotations

from typing import Any

from ase.atoms import Atoms

__all__ = ["atoms_to_list"]


def atoms_to_list(atoms: Atoms | Any) -> list[Atoms] | Any:
    """A single Atoms as a one-element list; anything else unchanged."""
    return [atoms] if isinstance(atoms, Atoms) else atoms
