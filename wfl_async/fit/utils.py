"""Fit helpers at wfl's module path (``wfl.fit.utils``)."""

from __future__ import annotations

from .ace import ace_fit_command_from_env

__all__ = ["ace_fit_jl_path"]


def ace_fit_jl_path() -> str:
    """The ACE1pack fitting command, as wfl finds it (see :func:`wfl_async.fit.ace.ace_fit_command_from_env`)."""
    return ace_fit_command_from_env()
