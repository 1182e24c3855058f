"""Helpers shared by the generating operations."""

from __future__ import annotations

from ase.atoms import Atoms

__all__ = ["save_config_type"]


def save_config_type(at: Atoms, action: str | bool, config_type: str) -> None:
    """Record ``config_type`` in ``at.info["config_type"]``.

    :param action: "append" (``old:new``), "overwrite", or False (do nothing)
    :raises ValueError: unknown action
    """
    if not action:
        return
    if action not in ("append", "overwrite"):
        raise ValueError(f"action {action} not 'append' or 'overwrite'")
    if action == "append" and "config_type" in at.info:
        at.info["config_type"] += ":" + config_type
    else:
        at.info["config_type"] = config_type
