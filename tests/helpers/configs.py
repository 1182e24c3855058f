"""Small atomic configurations and module-level (picklable) operations for autoparallelize tests."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ase.atoms import Atoms
from ase.build import bulk


def cu_configs(n: int, seed: int = 0, rattle: float = 0.05) -> list[Atoms]:
    """``n`` rattled 2-atom-wide fcc Cu cells, each a little different."""
    rng = np.random.default_rng(seed)
    configs = []
    for i in range(n):
        at = bulk("Cu", "fcc", a=3.6 + 0.01 * i, cubic=True) * (2, 1, 1)
        at.rattle(rattle, rng=rng)
        at.info["config_i"] = i
        configs.append(at)
    return configs


def tag_with_pid(atoms: list[Atoms], tag: str = "x") -> list[Atoms]:
    """Copy each config, recording the process that handled it and the chunk size."""
    out = []
    for at in atoms:
        new = at.copy()
        new.info["pid"] = os.getpid()
        new.info["chunk_len"] = len(atoms)
        new.info["tag"] = tag
        out.append(new)
    return out


def draw_random(atoms: list[Atoms], rng: Any = None,
                _autopara_per_item_info: list[dict[str, Any]] | None = None) -> list[Atoms]:
    """Record one number from each item's own generator, and its item index."""
    assert _autopara_per_item_info is not None
    out = []
    for at, info in zip(atoms, _autopara_per_item_info, strict=True):
        new = at.copy()
        new.info["item_i"] = info["item_i"]
        new.info["draw"] = float(info["rng"].uniform()) if "rng" in info else -1.0
        out.append(new)
    return out


def fail_on_odd(atoms: list[Atoms]) -> list[Atoms | None]:
    """None (a failed calculation) for odd ``config_i``."""
    return [None if at.info["config_i"] % 2 else at for at in atoms]


def trajectory_of_two(atoms: list[Atoms]) -> list[list[Atoms]]:
    """Two outputs per input, as an optimisation trajectory would give."""
    return [[at.copy(), at.copy()] for at in atoms]


_initialized: list[str] = []


def mark_initialized(value: str) -> None:
    """Pool initializer: remember that it ran in this process."""
    _initialized.append(value)


def report_initialized(atoms: list[Atoms]) -> list[Atoms]:
    out = []
    for at in atoms:
        new = at.copy()
        new.info["initialized"] = ",".join(_initialized) or "no"
        out.append(new)
    return out


def raise_value_error(atoms: list[Atoms]) -> list[Atoms]:
    raise ValueError("op failed on purpose")


def slow_copy(atoms: list[Atoms], seconds: float = 0.2) -> list[Atoms]:
    """Copy each config after sleeping (a long-running chunk)."""
    import time

    time.sleep(seconds)
    return [at.copy() for at in atoms]
