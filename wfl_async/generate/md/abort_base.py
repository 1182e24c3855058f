"""Base class of MD abort conditions (wfl's ``wfl.generate.md.abort_base``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ase.atoms import Atoms

__all__ = ["AbortSimBase"]


class AbortSimBase(ABC):
    """Checks each saved MD snapshot; :meth:`stop` says when ``md`` should abort the run.

    :param n_failed_steps: abort once this many snapshots in a row were not :meth:`atoms_ok`
    """

    def __init__(self, n_failed_steps: int = 1) -> None:
        self.ok_history: list[bool] = []
        self.n_failed_steps = n_failed_steps

    @abstractmethod
    def atoms_ok(self, at: Atoms) -> bool:
        """Whether this snapshot is acceptable."""

    def stop(self, at: Atoms) -> bool:
        """Record this snapshot; True once the last ``n_failed_steps`` were all not ok."""
        self.ok_history.append(bool(self.atoms_ok(at)))
        recent = self.ok_history[-self.n_failed_steps:]
        return len(recent) == self.n_failed_steps and not any(recent)
