"""Broken systems for the doctor and failure tests: test-owned config entries derived from a real one.

Each fault is what a user gets wrong: a Python without wfl_async, another numpy first on
PYTHONPATH, a run directory that cannot be written, an ssh config whose known_hosts lacks the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from wfl_async.config import load_config

BASE = "slurm_ssh"
"""The real system the broken ones are derived from (ssh, so the remote user is not root)."""

_SHIM = '''\
"""numpy shim for the doctor tests: the real numpy, claiming another major version."""
import os, sys
_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
del sys.modules["numpy"]
import numpy as _real
_real.__version__ = "9.0.0"
sys.modules["numpy"] = _real
'''


def _base_entry(name: str = BASE) -> dict[str, Any]:
    config = load_config()
    for path in config.config_files:
        systems = json.loads(path.read_text()).get("systems", {})
        if name in systems:
            return dict(systems[name])
    pytest.fail(f"system {name!r} is not in the test config; run scripts/testinfra/start_all.sh")


@pytest.fixture
def broken_root(tmp_path: Path, expyre_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An EXPYRE_ROOT whose config holds the healthy base system and one broken variant per fault."""
    base = _base_entry()
    shim = tmp_path / "shim"
    (shim / "numpy").mkdir(parents=True)
    (shim / "numpy" / "__init__.py").write_text(_SHIM)
    shim.chmod(0o755)
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    readonly.chmod(0o555)
    empty_known_hosts = tmp_path / "known_hosts_empty"
    empty_known_hosts.write_text("")
    ssh_config = tmp_path / "ssh_config_unknown_key"
    original = Path(base["ssh_config"] if isinstance(base["ssh_config"], str) else base["ssh_config"][0])
    ssh_config.write_text("\n".join(
        f"    UserKnownHostsFile {empty_known_hosts}" if line.strip().startswith("UserKnownHostsFile") else line
        for line in original.read_text().splitlines()) + "\n")
    unreachable = tmp_path / "ssh_config_unreachable"
    unreachable.write_text("\n".join(
        "    Port 1" if line.strip().startswith("Port") else line  # nothing listens on port 1
        for line in original.read_text().splitlines()) + "\n")
    for path in (tmp_path, *tmp_path.parents):
        if path == Path("/"):
            break
        os.chmod(path, os.stat(path).st_mode | 0o005)  # the ssh user must read the shim
    systems = {
        BASE: base,
        "no_wfl_async": {**base, "commands": [], "python": "/usr/bin/python3"},
        "numpy_mismatch": {**base, "commands": [*base["commands"], f"export PYTHONPATH={shim}:$PYTHONPATH"]},
        "readonly_rundir": {**base, "rundir": str(readonly / "run")},
        "unknown_host_key": {**base, "ssh_config": str(ssh_config)},
        "unreachable": {**base, "ssh_config": str(unreachable)},
        "unreachable_openssh": {**base, "ssh_config": str(unreachable), "transport": "openssh"},
        "through_openssh": {**base, "transport": "openssh"},
        "unresolvable": {**base, "host": "wfl-async-no-such-host.invalid"},
    }
    root = tmp_path / "_expyre"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"systems": systems}, indent=1))
    monkeypatch.setenv("EXPYRE_ROOT", str(root))
    return root
