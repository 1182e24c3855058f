"""Common MD abort conditions (wfl's ``wfl.generate.md.abort``), for ``md(..., abort_check=...)``."""

from __future__ import annotations

from ase.atoms import Atoms
from ase.neighborlist import neighbor_list

from .abort_base import AbortSimBase

__all__ = ["AbortOnCollision", "AbortOnLowEnergy", "AbortSimBase"]


class AbortOnCollision(AbortSimBase):
    """Abort when two atoms are closer than ``collision_radius`` for ``n_failed_steps`` snapshots in a row."""

    def __init__(self, collision_radius: float, n_failed_steps: int = 3) -> None:
        super().__init__(n_failed_steps)
        self.collision_radius = collision_radius

    def atoms_ok(self, at: Atoms) -> bool:
        return len(neighbor_list("i", at, self.collision_radius)) == 0


class AbortOnLowEnergy(AbortSimBase):
    """Abort when the energy per atom drops more than ``delta_E_per_atom`` below the first snapshot's."""

    def __init__(self, delta_E_per_atom: float) -> None:  # noqa: N803 (wfl's name)
        super().__init__(1)
        self.delta_E_per_atom = -abs(delta_E_per_atom)
        self.initial_E_per_atom: float | None = None

    def atoms_ok(self, at: Atoms) -> bool:
        energy = at.get_potential_energy() / len(at)
        if self.initial_E_per_atom is None:
            self.initial_E_per_atom = energy
            return True
        return bool(energy - self.initial_E_per_atom >= self.delta_E_per_atom)


