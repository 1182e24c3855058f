"""The ``wfl-async`` command line (see ``docs/cli.md``)."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
