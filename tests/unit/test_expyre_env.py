"""ExPyRe's environment variables and expyre.config.init(root), given their ExPyRe meaning."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from wfl_async.config import load_config
from wfl_async.config.expyre_env import remote_shell_ssh_config, retry_from_env
from wfl_async.errors import ConfigurationError
from wfl_async.job import RemoteJob

SYSTEM = {"host": "cluster", "scheduler": "slurm", "partitions": {"p": {"num_cores": 4, "max_time": "1h", "max_mem": "10GB"}}}


def _root(tmp_path: Path, name: str, systems: dict[str, object]) -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"systems": systems}))
    return root


def test_remsh_cmd_or_expyre_rsh_with_an_ssh_config_file_is_used(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPYRE_ROOT", str(_root(tmp_path, "a", {
        "own": dict(SYSTEM, remsh_cmd="ssh -F /etc/cluster_ssh_config"), "env": SYSTEM})))
    monkeypatch.setenv("EXPYRE_RSH", "ssh -F/home/me/ssh_cfg")
    systems = load_config().systems
    assert systems["own"].ssh_config == ["/etc/cluster_ssh_config"]
    assert systems["env"].ssh_config == ["/home/me/ssh_cfg"]


def test_a_remote_shell_wfl_async_cannot_use_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="'rsh -l me': .*cannot run another remote shell.*ssh_config"):
        remote_shell_ssh_config("c", "rsh -l me", "config.json")
    with pytest.raises(ConfigurationError, match="option '-p' is not supported.*ssh config file"):
        remote_shell_ssh_config("c", "ssh -p 2222", "config.json")


def test_expyre_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPYRE_RETRY", "4 1.5")
    assert retry_from_env() == (4, 1.5)
    monkeypatch.setenv("EXPYRE_RETRY", "often")
    with pytest.raises(ConfigurationError, match="EXPYRE_RETRY='often' must be 'tries seconds'"):
        retry_from_env()


def test_expyre_sys_is_the_default_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPYRE_SYS", "my_cluster")
    assert RemoteJob(print).sys_name == "my_cluster"
    monkeypatch.delenv("EXPYRE_SYS")
    assert RemoteJob(print).sys_name == "local"


def test_expyre_config_init_root_chooses_the_config_and_jobs_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPYRE_ROOT", str(_root(tmp_path, "env_root", {"from_env": SYSTEM})))
    chosen = _root(tmp_path, "chosen", {"from_init": SYSTEM})
    # what expyre.config.init(chosen) leaves behind (the real one, as wfl's test fixture calls it)
    expyre_config = pytest.importorskip("expyre.config")
    monkeypatch.setitem(sys.modules, "expyre.config", types.SimpleNamespace(local_stage_dir=None))
    assert "from_env" in load_config().systems
    monkeypatch.setitem(sys.modules, "expyre.config", expyre_config)
    monkeypatch.setattr(expyre_config, "local_stage_dir", None)
    expyre_config.init(chosen)
    config = load_config()
    assert "from_init" in config.systems and "from_env" not in config.systems
    assert config.local_stage_dir == chosen
