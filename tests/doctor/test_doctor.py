"""``wfl-async doctor`` and the first-submission check, against the real daemons and sshd.

Each broken system is a test-owned config.json entry derived from a real one: the fault is in
what a user gets wrong (a Python without wfl_async, another numpy first on PYTHONPATH, a run
directory that cannot be written, an ssh config whose known_hosts lacks the host's key).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import remote_functions as rf
from wfl_async.config import load_config
from wfl_async.errors import SystemNotReadyError
from wfl_async.jobs.remote_job import RemoteJob

pytestmark = pytest.mark.remote

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
    }
    root = tmp_path / "_expyre"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"systems": systems}, indent=1))
    monkeypatch.setenv("EXPYRE_ROOT", str(root))
    return root


def doctor(*systems: str) -> subprocess.CompletedProcess[str]:
    """``wfl-async doctor`` in its own process, as a user runs it; its output is saved for the report."""
    result = subprocess.run([sys.executable, "-m", "wfl_async.cli", "doctor", *systems], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    out_dir = os.environ.get("WFL_ASYNC_DOCTOR_OUTPUT_DIR")
    if out_dir:
        Path(out_dir, f"doctor_{'_'.join(systems)}.txt").write_text(
            f"$ wfl-async doctor {' '.join(systems)}\n{result.stderr}{result.stdout}(exit status {result.returncode})\n")
    return result


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("error:")]


def test_healthy_system_is_ok(broken_root: Path) -> None:
    result = doctor(BASE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"ok: system {BASE!r}")
    assert "wfl_async" in result.stdout and "numpy" in result.stdout
    assert "1 ssh connection(s)" in result.stderr


def test_every_system_of_one_host_shares_one_connection(broken_root: Path) -> None:
    result = doctor(BASE, "numpy_mismatch", "readonly_rundir")
    assert "1 ssh connection(s)" in result.stderr


def test_remote_python_without_wfl_async(broken_root: Path) -> None:
    result = doctor("no_wfl_async")
    assert result.returncode == 1
    lines = error_lines(result)
    assert any("cannot import wfl_async" in line and "ModuleNotFoundError" in line and '"commands"' in line
               for line in lines), result.stdout


def test_numpy_major_mismatch(broken_root: Path) -> None:
    result = doctor("numpy_mismatch")
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "numpy 9.0.0 there" in line and "major" in line and "pip install 'numpy==" in line


def test_unwritable_rundir(broken_root: Path) -> None:
    result = doctor("readonly_rundir")
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "'readonly_rundir'" in line and "readonly/run" in line and 'set "rundir"' in line


def test_unknown_host_key(broken_root: Path) -> None:
    result = doctor("unknown_host_key")
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "host key" in line and "not known" in line and "known_hosts" in line


def test_unknown_system_name_is_a_clear_error(broken_root: Path) -> None:
    result = doctor("no_such_system")
    assert result.returncode == 1
    assert "no_such_system" in result.stderr


@pytest.mark.parametrize("system,expected", [("no_wfl_async", "cannot import wfl_async"),
                                             ("numpy_mismatch", "numpy 9.0.0 there"),
                                             ("readonly_rundir", 'set "rundir"')])
def test_first_submission_fails_fast_with_the_doctor_message(broken_root: Path, system: str,
                                                             expected: str) -> None:
    """Nothing is submitted: the first job raises at once, and so does the second (cached)."""
    def job(i: int) -> RemoteJob:
        return RemoteJob(rf.sleep_then_return, (0, i), sys_name=system, job_name=f"doctor_{system}_{i}",
                         resources={"num_nodes": 1, "max_time": "5m"})

    with pytest.raises(SystemNotReadyError) as info:
        job(1).run()
    assert expected in str(info.value) and "nothing was submitted" in str(info.value)
    with pytest.raises(SystemNotReadyError):
        job(2).run()
    db = broken_root / "wfl_async_jobs.db"
    if db.exists():
        import sqlite3

        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM jobs WHERE remote_id IS NOT NULL").fetchone() == (0,)
