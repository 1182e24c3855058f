"""Find and merge ExPyRe ``config.json`` files, the way ExPyRe users already lay them out.

Search order, later overriding earlier leaf by leaf (expyre's ``update_dict_leaves``):
the root given to ``expyre.config.init(root)`` if a script called it; ``EXPYRE_ROOT`` alone if it
is set (and not ``@``); otherwise ``~/.expyre``, then every
``_expyre`` (or ``.expyre``) directory from the filesystem root down to the current
directory. A top-level ``"wfl_async"`` section (``{"systems": {NAME: {...}}}``) holds wfl_async's own
keys where ExPyRe ignores them; it is merged over the system's entry. The deepest directory found is
the local stage directory (where the jobs
database lives) unless a ``local_stage_dir`` key says otherwise. With no config file at
all, the built-in ``local`` system still exists and the stage directory is ``~/.expyre``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .expyre_env import expyre_init_root
from .expyre_modules import expyre_module
from .system_config import OUR_SECTION, SystemConfig, builtin_local_system, with_our_keys

__all__ = ["ProjectConfig", "config_dirs", "load_config"]


@dataclass(frozen=True)
class ProjectConfig:
    """The merged configuration: where local state lives, and the systems jobs can run on."""

    local_stage_dir: Path
    systems: dict[str, SystemConfig]
    config_files: tuple[Path, ...]

    def system(self, name: str) -> SystemConfig:
        """The system called ``name``, or a :class:`ConfigurationError` that lists the known ones."""
        try:
            return self.systems[name]
        except KeyError:
            where = ", ".join(str(p) for p in self.config_files) or "no config.json found"
            raise ConfigurationError(
                f"unknown system {name!r}: known systems are {sorted(self.systems)} (read from {where}). "
                f"Add it under \"systems\" in a config.json (in $EXPYRE_ROOT, ~/.expyre or an _expyre/ "
                f"directory above the current one) or fix sys_name.") from None


def config_dirs(cwd: Path | None = None) -> list[Path]:
    """Directories whose ``config.json`` apply here, shallowest first.

    A root chosen with ``expyre.config.init(root)`` (by a script that imports ExPyRe) wins, as it
    does for ExPyRe; then ``EXPYRE_ROOT``; then the directory search.
    """
    init_root = expyre_init_root()
    if init_root is not None and (init_root / "config.json").is_file():
        return [init_root]
    root = os.environ.get("EXPYRE_ROOT", "@")
    if root != "@":
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ConfigurationError(f"EXPYRE_ROOT={root!r} is not a directory; create it or unset EXPYRE_ROOT")
        return [path]
    found: list[Path] = []
    cur = (cwd or Path.cwd()).resolve()
    for directory in [cur, *cur.parents]:
        dot, under = directory / ".expyre", directory / "_expyre"
        if dot.is_dir() and under.is_dir():
            raise ConfigurationError(f"found both {dot} and {under}; keep one of them")
        if under.is_dir():
            found.append(under)
        elif dot.is_dir():
            found.append(dot)
    home = (Path.home() / ".expyre").resolve()
    dirs = [d.resolve() for d in reversed(found)]
    if home.is_dir() and home not in dirs:
        dirs.insert(0, home)
    return dirs


def load_config(cwd: Path | None = None) -> ProjectConfig:
    """Read and merge every applicable ``config.json``.

    :raises ConfigurationError: a file is unreadable or not JSON, or a system entry is malformed
    """
    merge = expyre_module("config").update_dict_leaves
    dirs = config_dirs(cwd)
    data: dict[str, Any] = {}
    files: list[Path] = []
    for directory in dirs:
        path = directory / "config.json"
        if not path.exists():
            continue
        try:
            merge(data, json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read {path}: {exc}. Fix the file (it must be JSON) or move it away.") from exc
        files.append(path)

    if "local_stage_dir" in data:
        stage = Path(data["local_stage_dir"]).expanduser()
    elif dirs:
        stage = dirs[-1]
    else:
        stage = Path.home() / ".expyre"

    systems = {"local": builtin_local_system()}
    raw_systems = data.get("systems", {})
    source = ", ".join(map(str, files))
    if not isinstance(raw_systems, dict):
        raise ConfigurationError(f"\"systems\" in {files} must be an object mapping names to systems")
    for name, entry in with_our_keys(raw_systems, data.get(OUR_SECTION), source).items():
        systems[name] = SystemConfig.from_json(name, entry, source=source)
    return ProjectConfig(local_stage_dir=stage, systems=systems, config_files=tuple(files))
