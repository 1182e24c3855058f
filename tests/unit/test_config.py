"""Config discovery and validation: ExPyRe's ``config.json`` files, found and merged as ExPyRe users expect.

Every test gets its own HOME and directory tree, so the user's real ``~/.expyre`` and the
test infrastructure's ``EXPYRE_ROOT`` never leak in.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wfl_async.config import load_config
from wfl_async.config.loader import config_dirs
from wfl_async.errors import ConfigurationError

SLURM: dict[str, Any] = {
    "host": "cluster.example.org", "scheduler": "slurm",
    "partitions": {"standard": {"num_cores": 16, "max_time": "48h", "max_mem": "64GB"}},
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME, no EXPYRE_ROOT, and the current directory somewhere neutral."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("EXPYRE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def write_config(directory: Path, data: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# ---------------------------------------------------------------- discovery


def test_expyre_root_alone_is_used_and_nothing_else(home: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(home / ".expyre", {"systems": {"from_home": SLURM}})
    project = tmp_path / "project"
    write_config(project / "_expyre", {"systems": {"from_project": SLURM}})
    root = tmp_path / "root"
    write_config(root, {"systems": {"from_root": SLURM}})
    monkeypatch.setenv("EXPYRE_ROOT", str(root))

    config = load_config(cwd=project)

    assert config_dirs(project) == [root]
    assert set(config.systems) == {"local", "from_root"}
    assert config.config_files == (root / "config.json",)
    assert config.local_stage_dir == root


def test_expyre_root_at_sign_means_search(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(home / ".expyre", {"systems": {"from_home": SLURM}})
    monkeypatch.setenv("EXPYRE_ROOT", "@")
    assert "from_home" in load_config(cwd=tmp_path).systems


def test_expyre_root_that_is_not_a_directory_is_an_error(home: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPYRE_ROOT", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="is not a directory.*unset EXPYRE_ROOT"):
        load_config(cwd=tmp_path)


def test_home_then_expyre_dirs_from_root_down_deeper_overriding_leaf_by_leaf(home: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    write_config(home / ".expyre", {
        "systems": {"cluster": {**SLURM, "header": ["#SBATCH --home"], "max_channels": 3},
                    "home_only": {**SLURM, "scheduler": "sge"}}})
    write_config(tmp_path / "a" / "_expyre", {
        "systems": {"cluster": {"scheduler": "pbs", "partitions": {"standard": {"num_cores": 32}}}}})
    write_config(tmp_path / "a" / "b" / "_expyre", {
        "systems": {"cluster": {"partitions": {"standard": {"max_time": "1h"}}}}})

    dirs = config_dirs(cwd)
    config = load_config(cwd=cwd)

    assert dirs == [home / ".expyre", tmp_path / "a" / "_expyre", tmp_path / "a" / "b" / "_expyre"]
    assert config.config_files == tuple(d / "config.json" for d in dirs)
    cluster = config.system("cluster")
    assert cluster.scheduler == "pbs"  # overridden by a/_expyre
    assert cluster.host == "cluster.example.org"  # kept from ~/.expyre
    assert cluster.header == ["#SBATCH --home"] and cluster.max_channels == 3
    partition = cluster.partitions["standard"]
    assert partition["num_cores"] == 32  # a/_expyre
    assert partition["max_time"] == 3600  # a/b/_expyre, parsed to seconds
    assert partition["max_mem"] == 64 * 1024 * 1024  # ~/.expyre, parsed to kB
    assert config.system("home_only").scheduler == "sge"
    # the deepest directory found holds local state
    assert config.local_stage_dir == tmp_path / "a" / "b" / "_expyre"


def test_dot_expyre_directories_count_too_but_not_both_in_one_place(home: Path, tmp_path: Path) -> None:
    write_config(tmp_path / "p" / ".expyre", {"systems": {"dotted": SLURM}})
    assert "dotted" in load_config(cwd=tmp_path / "p").systems
    (tmp_path / "p" / "_expyre").mkdir()
    with pytest.raises(ConfigurationError, match="both .*keep one"):
        load_config(cwd=tmp_path / "p")


def test_expyre_dirs_below_the_current_directory_are_ignored(home: Path, tmp_path: Path) -> None:
    write_config(tmp_path / "p" / "deeper" / "_expyre", {"systems": {"too_deep": SLURM}})
    config = load_config(cwd=tmp_path / "p")
    assert "too_deep" not in config.systems


def test_delete_marker_removes_an_inherited_system(home: Path, tmp_path: Path) -> None:
    write_config(home / ".expyre", {"systems": {"old": SLURM, "kept": SLURM}})
    write_config(tmp_path / "p" / "_expyre", {"systems": {"old": "_DELETE_"}})
    assert set(load_config(cwd=tmp_path / "p").systems) == {"local", "kept"}


def test_local_stage_dir_key_overrides_the_deepest_directory(home: Path, tmp_path: Path) -> None:
    write_config(tmp_path / "p" / "_expyre", {"local_stage_dir": "~/stage here", "systems": {}})
    config = load_config(cwd=tmp_path / "p")
    assert config.local_stage_dir == home / "stage here"


def test_builtin_local_system_exists_without_any_config(home: Path, tmp_path: Path) -> None:
    config = load_config(cwd=tmp_path)
    assert config.config_files == ()
    assert list(config.systems) == ["local"]
    local = config.system("local")
    assert local.host is None and local.scheduler == "local"
    assert local.python == sys.executable
    assert local.partitions["local"]["num_cores"] == (os.cpu_count() or 1)
    assert config.local_stage_dir == home / ".expyre"


def test_a_configured_local_system_replaces_the_builtin_one(home: Path, tmp_path: Path) -> None:
    write_config(home / ".expyre", {"systems": {"local": {"host": None, "scheduler": "local",
                                                          "partitions": {"here": {"num_cores": 3}}}}})
    assert list(load_config(cwd=tmp_path).system("local").partitions) == ["here"]


def test_queues_is_accepted_for_partitions(home: Path, tmp_path: Path) -> None:
    entry = {k: v for k, v in SLURM.items() if k != "partitions"} | {"queues": SLURM["partitions"]}
    write_config(home / ".expyre", {"systems": {"old_style": entry}})
    assert list(load_config(cwd=tmp_path).system("old_style").partitions) == ["standard"]


def test_ssh_config_string_becomes_a_list(home: Path, tmp_path: Path) -> None:
    write_config(home / ".expyre", {"systems": {"s": {**SLURM, "ssh_config": "~/my ssh config"}}})
    assert load_config(cwd=tmp_path).system("s").ssh_config == ["~/my ssh config"]


# ---------------------------------------------------------------- errors


def test_non_json_config_names_the_file(home: Path, tmp_path: Path) -> None:
    path = write_config(home / ".expyre", '{"systems": {,}')
    with pytest.raises(ConfigurationError, match=f"cannot read {path}.*must be JSON"):
        load_config(cwd=tmp_path)


def test_unreadable_config_names_the_file(home: Path, tmp_path: Path) -> None:
    # a directory called config.json: unreadable even for root (chmod 000 is not)
    path = home / ".expyre" / "config.json"
    path.mkdir(parents=True)
    with pytest.raises(ConfigurationError, match=f"cannot read {path}"):
        load_config(cwd=tmp_path)


def test_systems_must_be_an_object(home: Path, tmp_path: Path) -> None:
    write_config(home / ".expyre", {"systems": ["slurm"]})
    with pytest.raises(ConfigurationError, match="must be an object"):
        load_config(cwd=tmp_path)


def test_unknown_system_key_lists_the_valid_ones(home: Path, tmp_path: Path) -> None:
    path = write_config(home / ".expyre", {"systems": {"typo": {**SLURM, "shceduler": "slurm"}}})
    with pytest.raises(ConfigurationError) as info:
        load_config(cwd=tmp_path)
    message = str(info.value)
    assert "'typo'" in message and "['shceduler']" in message and str(path) in message
    assert "'scheduler'" in message and "'ssh_config'" in message  # the valid keys


@pytest.mark.parametrize("scheduler", ["lsf", None, "SLURM"])
def test_bad_scheduler_lists_the_known_ones(home: Path, tmp_path: Path, scheduler: str | None) -> None:
    entry = {**SLURM, "scheduler": scheduler} if scheduler else {k: v for k, v in SLURM.items() if k != "scheduler"}
    write_config(home / ".expyre", {"systems": {"bad": entry}})
    with pytest.raises(ConfigurationError, match=r"'bad'.*scheduler .* is not one of \['slurm', 'pbs', 'sge', 'local'\]"):
        load_config(cwd=tmp_path)


def test_missing_host_says_null_means_this_machine(home: Path, tmp_path: Path) -> None:
    write_config(home / ".expyre", {"systems": {"nohost": {"scheduler": "slurm",
                                                           "partitions": SLURM["partitions"]}}})
    with pytest.raises(ConfigurationError, match="'nohost'.*needs a \"host\" \\(null for this machine\\)"):
        load_config(cwd=tmp_path)


@pytest.mark.parametrize("partition", [{"max_time": "1h"}, {"num_cores": "16"}, "16 cores"])
def test_partition_without_integer_num_cores(home: Path, tmp_path: Path, partition: Any) -> None:
    write_config(home / ".expyre", {"systems": {"c": {**SLURM, "partitions": {"standard": partition}}}})
    with pytest.raises(ConfigurationError, match="'c' partition 'standard'.*needs an integer \"num_cores\""):
        load_config(cwd=tmp_path)


def test_bad_max_time_names_the_partition(home: Path, tmp_path: Path) -> None:
    write_config(home / ".expyre", {"systems": {"c": {**SLURM, "partitions": {
        "standard": {"num_cores": 4, "max_time": "forever"}}}}})
    with pytest.raises(ConfigurationError, match="'c' partition 'standard'"):
        load_config(cwd=tmp_path)


def test_system_both_partitions_and_queues(home: Path, tmp_path: Path) -> None:
    write_config(home / ".expyre", {"systems": {"c": {**SLURM, "queues": SLURM["partitions"]}}})
    with pytest.raises(ConfigurationError, match="both 'partitions' and 'queues'"):
        load_config(cwd=tmp_path)


def test_unknown_system_name_lists_the_known_ones_and_the_files(home: Path, tmp_path: Path) -> None:
    path = write_config(home / ".expyre", {"systems": {"archer2": SLURM, "young": SLURM}})
    config = load_config(cwd=tmp_path)
    with pytest.raises(ConfigurationError) as info:
        config.system("archer")
    message = str(info.value)
    assert "unknown system 'archer'" in message
    assert "['archer2', 'local', 'young']" in message
    assert str(path) in message and "fix sys_name" in message


def test_unknown_system_name_without_config_says_none_was_found(home: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"known systems are \['local'\].*no config.json found"):
        load_config(cwd=tmp_path).system("cluster")


# ---------------------------------------------------------------- expyre's import-time side effects


def test_loading_config_does_not_initialise_expyre(tmp_path: Path) -> None:
    """expyre.config reads every config.json and opens jobs.db on import; ours must not trigger it.

    Run in a fresh interpreter: expyre skips its init() when pytest is imported, which would
    hide the side effect here.
    """
    root = tmp_path / "root"
    # "ssh_config" is ours: expyre's own System() would raise TypeError on it
    write_config(root, {"systems": {"c": {**SLURM, "ssh_config": "~/.ssh/config"}}})
    code = (
        "import sys\n"
        "from wfl_async.config import load_config\n"
        "from wfl_async.config.expyre_modules import expyre_module\n"
        "config = load_config()\n"
        "expyre_module('units'); expyre_module('resources'); expyre_module('config')\n"
        "assert 'pytest' not in sys.modules\n"
        "print(sorted(config.systems), 'expyre' in sys.modules,\n"
        "      sorted(m for m in sys.modules if m == 'expyre' or m.startswith('expyre.')))\n"
        "import os; print(os.environ['EXPYRE_ROOT'])\n"
    )
    env = {**os.environ, "EXPYRE_ROOT": str(root), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2], timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "['c', 'local'] False []"
    # the EXPYRE_ROOT trick is undone: the user's own environment is as it was
    assert lines[1] == str(root)
    assert not (root / "jobs.db").exists()
    assert list(root.iterdir()) == [root / "config.json"]


def test_private_expyre_import_restores_expyre_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib

    from wfl_async.config import expyre_modules

    monkeypatch.setenv("EXPYRE_ROOT", str(tmp_path))
    monkeypatch.delitem(sys.modules, "_wfl_async_expyre.config", raising=False)
    module = expyre_modules.expyre_module("config")
    assert os.environ["EXPYRE_ROOT"] == str(tmp_path)
    assert callable(module.update_dict_leaves)
    assert module is importlib.import_module("_wfl_async_expyre.config")
    assert "expyre.config" not in sys.modules or sys.modules["expyre.config"] is not module


def test_our_keys_in_the_wfl_async_section_are_merged_over_the_expyre_entry(home: Path, tmp_path: Path) -> None:
    write_config(home / ".expyre", {"systems": {"c": SLURM},
                                    "wfl_async": {"systems": {"c": {"transport": "openssh", "max_channels": 4}}}})
    system = load_config().system("c")
    assert system.transport == "openssh" and system.max_channels == 4 and system.host == SLURM["host"]


@pytest.mark.parametrize("section, words", [
    ({"systems": {"other": {"transport": "openssh"}}}, "has no system 'other'"),
    ({"systems": {"c": {"host": "elsewhere"}}}, "move them to the system's entry"),
    ({"c": {"transport": "openssh"}}, "must be {\"systems\""),
])
def test_a_misplaced_wfl_async_section_says_where_keys_belong(home: Path, tmp_path: Path, section: Any,
                                                                words: str) -> None:
    write_config(home / ".expyre", {"systems": {"c": SLURM}, "wfl_async": section})
    with pytest.raises(ConfigurationError, match=re.escape(words)):
        load_config()


def test_bad_transport_lists_the_known_ones(home: Path, tmp_path: Path) -> None:
    write_config(home / ".expyre", {"systems": {"c": {**SLURM, "transport": "paramiko"}}})
    with pytest.raises(ConfigurationError, match=r"\"transport\" must be one of \['asyncssh', 'openssh'\]"):
        load_config()


def test_expyres_own_xpr_reads_a_config_whose_wfl_async_keys_are_in_their_section(tmp_path: Path) -> None:
    """ExPyRe refuses unknown keys inside "systems" (TypeError); the "wfl_async" section it ignores."""
    ours = {"transport": "openssh", "ssh_config": "~/.ssh/config", "max_channels": 4}
    for name, data in [("section", {"systems": {"c": SLURM}, "wfl_async": {"systems": {"c": ours}}}),
                       ("inline", {"systems": {"c": {**SLURM, **ours}}})]:
        root = tmp_path / name
        write_config(root, data)
        done = subprocess.run(["xpr", "ls"], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, EXPYRE_ROOT=str(root)))
        if name == "section":
            assert done.returncode == 0 and "No matching jobs" in done.stdout, done.stdout + done.stderr
        else:
            assert "unexpected keyword argument" in done.stderr
