"""Configuration: ExPyRe's ``config.json`` files, found and merged as ExPyRe does."""

from __future__ import annotations

from .loader import ProjectConfig, config_dirs, load_config
from .system_config import SystemConfig

__all__ = ["ProjectConfig", "SystemConfig", "config_dirs", "load_config"]
