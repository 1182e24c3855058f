"""Sample the pressure for a variable-cell optimisation or MD run (wfl's modes)."""

from __future__ import annotations

from typing import Any

from ase.atoms import Atoms

__all__ = ["sample_pressure"]


def sample_pressure(pressure: Any, at: Atoms | None = None, rng: Any = None, _depth: int = 0) -> float:
    """A pressure (GPa) from a specification.

    - float: that pressure
    - ``("info", key)``: parse ``at.info[key]`` the same way
    - ``("exponential", scale)``: ``scale * rng.exponential(1.0)``
    - ``("normal_positive", mean, sigma)``: normal, redrawn while negative (max 1000 tries)
    - ``("uniform", lower, upper)``: uniform between the bounds

    :raises RuntimeError: unparseable specification, or no positive normal value found
    """
    try:
        if isinstance(pressure, (float, int)):
            return pressure
        mode = pressure[0]
        if mode == "info":
            if len(pressure) != 2 or at is None:
                raise ValueError()
            if _depth > 10:
                raise RuntimeError(f"Infinite recursion in pressure {pressure}")
            return sample_pressure(at.info[pressure[1]], at, rng, _depth + 1)
        if mode == "exponential" and len(pressure) == 2:
            return float(pressure[1] * rng.exponential(1.0))
        if mode == "normal_positive" and len(pressure) == 3:
            for _ in range(1000):
                p = float(rng.normal(pressure[1], pressure[2]))
                if p >= 0:
                    return p
            raise RuntimeError("Failed to get positive from normal distribution in 1000 iterations")
        if mode == "uniform" and len(pressure) == 3:
            return float(rng.uniform(pressure[1], pressure[2]))
        raise ValueError()
    except (ValueError, TypeError, KeyError) as exc:
        raise RuntimeError(f"Failed to parse pressure '{pressure}'") from exc
