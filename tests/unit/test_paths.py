"""Remote paths: independent of the submitting host, safe whatever the job is called."""

from __future__ import annotations

import json
import operator
import re
import socket
from pathlib import Path

import pytest

from wfl_async.job import RemoteJob
from wfl_async.session import session_scope
from wfl_async.system.paths import job_dir_name, project_key, safe_name

SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
"""No shell, scheduler or path metacharacter, and no leading '-' (an option) or '.' (hidden, '..')."""

HOSTILE_NAMES = [
    "", " ", ".", "..", "../../etc/passwd", "/", "-", "--help", "-N evil", ".hidden", "a/b", "a b",
    "it's \"quoted\"", "$HOME", "$(rm -rf ~)", "`id`", "a;b|c&d", "x\ny", "tab\there", "ü", "名前",
    "job+1", "100%", "*?[]", "#comment", "~user", "a" * 300, "-" * 50 + "x", "_" * 45 + "tail",
]
KEY = "0123456789abcdef" * 4


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_job_dir_names_are_safe_for_hostile_job_names(name: str) -> None:
    directory = job_dir_name(name, KEY)
    assert SAFE.match(directory), directory
    assert len(directory) <= 61 and directory.endswith(KEY[:20])
    assert "/" not in directory and directory not in (".", "..")
    cleaned = safe_name(name)
    assert SAFE.match(cleaned) and 0 < len(cleaned) <= 40


def test_same_name_different_key_gives_different_dirs() -> None:
    names = [job_dir_name("same name", f"{i:064x}"[::-1]) for i in range(100)]
    assert len(set(names)) == 100


def test_names_differing_only_in_unsafe_characters_still_get_different_dirs() -> None:
    # the hash part tells them apart: their sanitised names are equal
    assert safe_name("a b") == safe_name("a/b") == "a_b"
    assert job_dir_name("a b", "1" * 64) != job_dir_name("a/b", "2" * 64)


def test_readable_names_are_kept() -> None:
    assert job_dir_name("relax_chunk_3", KEY) == f"relax_chunk_3-{KEY[:20]}"
    assert safe_name("Cu-fcc.v2") == "Cu-fcc.v2"


@pytest.mark.parametrize("project", ["my project", "it's #1", "ü-proj", "-rf"])
def test_project_key_is_safe_and_depends_only_on_the_stage_dir(tmp_path: Path, project: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    stage = tmp_path / project / "_expyre"
    stage.mkdir(parents=True)
    first = project_key(stage)
    assert SAFE.match(first), first
    monkeypatch.setattr(socket, "gethostname", lambda: "login-node-7")
    monkeypatch.setenv("HOSTNAME", "login-node-7")
    assert project_key(stage) == first
    assert "login-node-7" not in first
    assert project_key(tmp_path / "other" / "_expyre") != first


def test_project_key_names_the_project_directory(tmp_path: Path) -> None:
    assert project_key(tmp_path / "relax study" / "_expyre").startswith("relax_study-")
    assert project_key(tmp_path / "relax study" / ".expyre").startswith("relax_study-")
    assert project_key(tmp_path / "my stage").startswith("my_stage-")


async def test_remote_job_directories_do_not_depend_on_the_submitting_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ExPyRe appended $HOSTNAME to the run directory: a rerun from another login node lost its jobs."""
    root = tmp_path / "_expyre"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"systems": {"here": {
        "host": None, "scheduler": "local", "rundir": str(tmp_path / "run"),
        "partitions": {"p": {"num_cores": 1}}}}}))
    monkeypatch.setenv("EXPYRE_ROOT", str(root))
    seen = []
    for host in ("login01.cluster.example", "login02.cluster.example"):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        monkeypatch.setenv("HOSTNAME", host)
        async with session_scope() as rt:
            system = rt.system("here")
            remote_root = await system.remote_root()
            job = RemoteJob(operator.add, (1, 2), sys_name="here", job_name="it's $HOME/x y",
                            resources={"num_cores": 1, "max_time": "1m"}).prepare(rt)
        assert "login0" not in remote_root and "login0" not in job.job_dir
        assert SAFE.match(job.job_dir)
        seen.append((remote_root, job.job_dir))
    assert seen[0] == seen[1]
    assert Path(seen[0][0]).parent == (tmp_path / "run").resolve()


async def test_a_home_relative_local_rundir_is_the_same_from_any_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # '~/' used to be stripped, making the run directory relative to wherever the script ran:
    # a rerun from another directory then called finished jobs died
    root = tmp_path / "_expyre"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"systems": {"here": {
        "host": None, "scheduler": "local", "rundir": "~/wfl_async_rundir_test",
        "partitions": {"p": {"num_cores": 1}}}}}))
    monkeypatch.setenv("EXPYRE_ROOT", str(root))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    seen = []
    for cwd in ("a", "b"):
        (tmp_path / cwd).mkdir()
        monkeypatch.chdir(tmp_path / cwd)
        async with session_scope() as rt:
            seen.append(await rt.system("here").remote_root())
    assert seen[0] == seen[1]
    assert Path(seen[0]).parent == (tmp_path / "home" / "wfl_async_rundir_test").resolve()
