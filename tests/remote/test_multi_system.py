"""One call over several systems (sys_name a list): placement, overflow of waiting chunks (queued jobs
and packed chunks) off a system made slow, a driver killed in the middle of a move, a system that
fails its check, a rerun re-attaching each chunk where it ran.

The slow system is the real Slurm with a ``sbatch`` wrapper first on its PATH that submits every job
held (``sbatch --hold``): its chunks never start until taken back. The fast one is SGE over ssh.
Each chunk appends a line to ``_completions.log`` in its own job directory when it finishes; those
files are read back from every listed system: a chunk run to completion twice (or never) shows.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ase.io import read

from tests.conftest import remote_system_names
from tests.helpers import remote_functions as rf
from tests.remote.test_autoparallelize_remote import cells
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import ConfigurationError
from wfl_async.session import Session, session_scope

pytestmark = pytest.mark.remote

FAST = "sge_ssh"
"""The system that drains (SGE over ssh)."""


@pytest.fixture(autouse=True)
def _needs_slurm_and_sge_ssh() -> None:
    names = remote_system_names()
    missing = [n for n in ("slurm", FAST) if n not in names]
    if missing:
        pytest.fail(f"these tests need the systems {missing} (scripts/testinfra/start_all.sh); "
                    f"EXPYRE_PYTEST_SYSTEMS leaves them out")


def held_slurm(root: Path, bin_dir: Path, name: str = "slurm_held", *, slow_cancel: bool = False) -> str:
    """A copy of ``slurm`` whose jobs are all submitted held (they never start until released or
    cancelled); ``slow_cancel``: its ``scancel`` says so in ``bin_dir/cancelling`` and waits 3 s first."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    sbatch = bin_dir / "sbatch"
    sbatch.write_text('#!/bin/bash\nexec /usr/bin/sbatch --hold "$@"\n')
    sbatch.chmod(0o755)
    if slow_cancel:
        scancel = bin_dir / "scancel"
        scancel.write_text(f'#!/bin/bash\necho "$@" >> {shlex.quote(str(bin_dir))}/cancelling\nsleep 3\n'
                           f'exec /usr/bin/scancel "$@"\n')
        scancel.chmod(0o755)
    config = json.loads((root / "config.json").read_text())
    entry = dict(config["systems"]["slurm"])
    entry["pre_submit_cmds"] = [*entry.get("pre_submit_cmds", []), f"export PATH={bin_dir}:$PATH"]
    config["systems"][name] = entry
    (root / "config.json").write_text(json.dumps(config, indent=1))
    return name


def add_system(root: Path, name: str, base: str, **changes: Any) -> str:
    config = json.loads((root / "config.json").read_text())
    config["systems"][name] = dict(config["systems"][base], **changes)
    (root / "config.json").write_text(json.dumps(config, indent=1))
    return name


def info(systems: Any, **kwargs: Any) -> RemoteInfo:
    values: dict[str, Any] = {"sys_name": systems, "job_name": f"multi-{uuid.uuid4().hex[:6]}",
                              "resources": {"num_cores": 1, "max_time": "10m"}, "partial_node": True,
                              "num_inputs_per_queued_job": 1, "check_interval": 0.3}
    values.update(kwargs)
    return RemoteInfo(**values)


async def completions(session: Session, systems: list[str], job_name: str) -> Counter[str]:
    """Chunk job dir -> lines in its ``_completions.log``, summed over every listed system."""
    records = [r for r in await session.db.select() if r.name.startswith(f"{job_name}_chunk_")]
    counts: Counter[str] = Counter({r.job_dir: 0 for r in records})
    for name in systems:
        target = session.system(name)
        root = await target.remote_root()
        dirs = " ".join(shlex.quote(r.job_dir) for r in records)
        answer = await target.transport.run(
            f"cd {shlex.quote(root)} && for d in {dirs}; do echo \"$d $(cat $d/_completions.log 2>/dev/null "
            f"| wc -l)\"; done")
        for line in answer.stdout.decode().splitlines():
            job_dir, count = line.split()
            counts[job_dir] += int(count)
    return counts


def cancel_left_over(job_name: str) -> None:
    """Cancel every Slurm job of the call ``job_name`` (its chunks' and workers': held jobs never end)."""
    listing = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=False).stdout
    ids = [line.split()[0] for line in listing.splitlines() if job_name in line]
    if ids:
        subprocess.run(["scancel", *ids], check=False)


async def test_chunks_are_spread_by_weight_and_a_rerun_with_another_list_reattaches_where_each_ran(
        fresh_expyre_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_EXPYRE_NO_MARK_PROCESSED", "1")  # the rerun finds the records as they were
    first = info({"slurm": 2, FAST: 1})
    output = tmp_path / "out.xyz"
    async with session_scope() as session:
        result = await autoparallelize.aio(rf._counted_label, ConfigSet(cells(6)), OutputSpec(output),
                                           autopara_info=AutoparaInfo(remote_info=first))
        assert [a.info["i"] for a in result] == list(range(6)) and all(a.info["labelled"] for a in result)
        records = {r.name: r for r in await session.db.select(name=first.job_name)}
        # nothing measured yet (a fresh jobs database): by weight, interleaved
        assert Counter(r.system for r in records.values()) == {"slurm": 4, FAST: 2}
        assert records[f"{first.job_name}_chunk_1"].system == FAST
        assert set((await completions(session, ["slurm", FAST], first.job_name)).values()) == {1}
        # the same call with another list: each chunk is re-attached where it ran, nothing is submitted
        again = RemoteInfo(**dict(first.to_dict(), sys_name=[FAST]))
        rerun = await autoparallelize.aio(rf._counted_label, ConfigSet(cells(6)), OutputSpec(tmp_path / "2.xyz"),
                                          autopara_info=AutoparaInfo(remote_info=again))
        assert [a.info["i"] for a in rerun] == list(range(6))
        after = {r.name: r for r in await session.db.select(name=first.job_name)}
        assert {n: r.system for n, r in after.items()} == {n: r.system for n, r in records.items()}
        assert set((await completions(session, ["slurm", FAST], first.job_name)).values()) == {1}


async def test_queued_jobs_waiting_on_a_held_system_move_once_to_the_one_that_drains(
        fresh_expyre_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    slow = held_slurm(fresh_expyre_root, tmp_path / "bin")
    call = info([slow, FAST])
    caplog.set_level(logging.INFO, logger="wfl_async")
    try:
        async with session_scope() as session:
            result = await autoparallelize.aio(rf._counted_label, ConfigSet(cells(6)), OutputSpec(tmp_path / "o.xyz"),
                                               autopara_info=AutoparaInfo(remote_info=call))
            assert [a.info["i"] for a in result] == list(range(6)) and all(a.info["labelled"] for a in result)
            records = await session.db.select(name=call.job_name)
            moved = [r for r in records if r.moved_from == slow]
            # the held system's three chunks never started there: every one moved, each once
            assert len(moved) == 3 and all(r.system == FAST and r.moved_to is None for r in records)
            assert all("cancelled while queued" in (r.message or "") or r.status.value == "processed" for r in moved)
            assert set((await completions(session, [slow, FAST], call.job_name)).values()) == {1}
            # and the scheduler lists none of them any more
            states = await session.system(slow).queue_states()
            assert not [i for i in states if i in {r.remote_id for r in moved}]
    finally:
        cancel_left_over(call.job_name)
    lines = [r.getMessage() for r in caplog.records if "moved from" in r.getMessage()]
    assert len(lines) == 3 and all(f"from {slow} to {FAST}" in line and "waiting on" in line for line in lines)
    # 'wfl-async ls' and 'status' say where each chunk ran and how many moved
    cli = [sys.executable, "-m", "wfl_async.cli"]
    env = dict(os.environ, COLUMNS="250", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    listed = subprocess.run([*cli, "ls", "-n", f"{call.job_name}.*"], env=env, capture_output=True, text=True,
                            check=True).stdout
    assert listed.count(f"{slow}→{FAST}") == 3 and "3 moved to another system" in listed, listed
    status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, check=True).stdout
    assert "MOVED IN" in status, status


async def test_packed_chunks_waiting_in_a_held_systems_queue_are_taken_back_and_run_once_elsewhere(
        fresh_expyre_root: Path, tmp_path: Path) -> None:
    slow = held_slurm(fresh_expyre_root, tmp_path / "bin")
    call = info([slow, FAST], pack={"workers": 1, "idle_seconds": 1})
    try:
        async with session_scope() as session:
            result = await autoparallelize.aio(rf._counted_label, ConfigSet(cells(6)), OutputSpec(tmp_path / "o.xyz"),
                                               autopara_info=AutoparaInfo(remote_info=call))
            assert [a.info["i"] for a in result] == list(range(6))
            records = await session.db.select(name=call.job_name)
            assert sum(1 for r in records if r.moved_from == slow) == 3
            assert all(r.system == FAST and r.route is not None and r.route.value == "packed" for r in records)
            assert set((await completions(session, [slow, FAST], call.job_name)).values()) == {1}
            # the taken-back entries left the held system's queue: its (held) worker would find none
            root = await session.system(slow).remote_root()
            left = await session.system(slow).transport.run(
                f"cd {shlex.quote(root)} && ls _wfl_async_pack/*/todo | wc -l; ls _wfl_async_pack/*/moved | wc -l")
            assert _two_counts(left.stdout.decode()) == (0, 3)
    finally:
        cancel_left_over(call.job_name)


def _two_counts(text: str) -> tuple[int, int]:
    numbers = [int(w) for w in text.split() if w.isdigit()]
    return numbers[-2], numbers[-1]


async def test_a_system_that_fails_its_check_or_refuses_the_resources_is_left_out_with_its_reason(
        fresh_expyre_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = add_system(fresh_expyre_root, "slurm_no_python", "slurm", python="/nonexistent/python3")
    small = add_system(fresh_expyre_root, "slurm_small", "slurm",
                       partitions={"debug": {"num_cores": 1, "max_time": "5m", "max_mem": "1GB"}})
    call = info([broken, small, FAST], resources={"num_cores": 2, "max_time": "10m"})
    caplog.set_level(logging.WARNING, logger="wfl_async")
    async with session_scope() as session:
        result = await autoparallelize.aio(rf._counted_label, ConfigSet(cells(3)), OutputSpec(tmp_path / "o.xyz"),
                                           autopara_info=AutoparaInfo(remote_info=call))
        assert [a.info["i"] for a in result] == list(range(3))
        assert {r.system for r in await session.db.select(name=call.job_name)} == {FAST}
    left_out = [r.getMessage() for r in caplog.records if "left out of this call" in r.getMessage()]
    assert any(broken in m and "/nonexistent/python3" in m for m in left_out), left_out
    assert any(small in m and "no partition" in m for m in left_out), left_out
    # none usable: the call fails before anything is submitted, naming each one's reason
    with pytest.raises(ConfigurationError, match=r"no listed system can run this call(.|\n)*slurm_no_python"):
        await autoparallelize.aio(rf._counted_label, ConfigSet(cells(2)), OutputSpec(tmp_path / "n.xyz"),
                                  autopara_info=AutoparaInfo(remote_info=info([broken, small],
                                                                              resources={"num_cores": 2})))


KILLED_SCRIPT = """
import sys
from wfl_async.configset import ConfigSet, OutputSpec
from tests.helpers.remote_functions import counted_label
from tests.remote.test_autoparallelize_remote import cells
counted_label(ConfigSet(cells(6)), OutputSpec(sys.argv[1]))   # WFL_EXPYRE_INFO says where
"""


async def test_a_driver_killed_in_the_middle_of_a_move_is_rerun_and_every_chunk_runs_once(
        fresh_expyre_root: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    slow = held_slurm(fresh_expyre_root, bin_dir, slow_cancel=True)
    script = tmp_path / "workflow.py"
    script.write_text(KILLED_SCRIPT)
    output = tmp_path / "labelled.xyz"
    name = f"killed-{uuid.uuid4().hex[:6]}"

    def env(systems: list[str]) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]),
                    WFL_EXPYRE_INFO=json.dumps({"sys_name": systems, "job_name": name,
                                                "resources": {"num_cores": 1, "max_time": "10m"},
                                                "partial_node": True, "num_inputs_per_queued_job": 1,
                                                "check_interval": 0.3}))
    try:
        proc = subprocess.Popen([sys.executable, str(script), str(output)], env=env([slow, FAST]), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 80
        while not (bin_dir / "cancelling").exists():  # the move is recorded and its cancel under way
            assert proc.poll() is None and time.monotonic() < deadline, "no move began"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert not output.exists()
        async with session_scope() as session:
            under_way = [r for r in await session.db.select(name=name) if r.moved_to is not None]
            assert under_way, "the jobs database records no move under way"
        # the rerun lists the systems the other way round: chunks re-attach where they are
        rerun = subprocess.run([sys.executable, str(script), str(output)], env=env([FAST, slow]), cwd=tmp_path,
                               capture_output=True, timeout=150, check=False)
        assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
        got = read(output, ":")
        assert [a.info["i"] for a in got] == list(range(6)) and all(a.info["labelled"] for a in got)
        async with session_scope() as session:
            records = await session.db.select(name=name)
            assert all(r.system == FAST and r.moved_to is None for r in records)
            assert sum(1 for r in records if r.moved_from == slow) == 3
            assert set((await completions(session, [slow, FAST], name)).values()) == {1}
    finally:
        cancel_left_over(name)


async def test_a_committee_spreads_its_members_over_the_listed_systems(
        fresh_expyre_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers.gap_data import al_training_configs, simple_fit_dict
    from wfl_async.fit.committee import fit_gap_committee

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WFL_GAP_FIT_OMP_NUM_THREADS", "1")
    configs = al_training_configs()
    remote = {"sys_name": ["slurm", FAST], "job_name": "multi_committee", "partial_node": True,
              "resources": {"num_cores": 1, "max_time": "10m"}, "check_interval": 0.3, "timeout": 300,
              "env_vars": ["WFL_GAP_FIT_OMP_NUM_THREADS=1"]}
    # (tests/remote/test_fits.py compares queued committees with local ones; here: where they ran)
    files = fit_gap_committee(configs, simple_fit_dict("c/Al.xml"), 2, stdout_file="c/stdout", remote_info=remote)
    assert files == [f"c/Al.committee_{i}.xml" for i in range(2)]
    assert all("GAP_params" in Path(f).read_text() for f in files)
    async with session_scope() as session:
        records = await session.db.select(name="multi_committee")
    assert sorted(r.system for r in records) == sorted(["slurm", FAST])
