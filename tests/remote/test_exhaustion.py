"""Resource exhaustion on the real daemons: a full or inode-exhausted run directory, a disk filled
by a job while it runs, a full local stage directory while results are fetched (issue 15).

Each test gives a test-owned copy of a system a run directory on a small tmpfs of its own
(:mod:`tests.helpers.small_fs`); the shared config and run directories are never touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import anyio
import pytest

from tests.helpers import remote_functions as rf
from tests.helpers.small_fs import fill_blocks, fill_inodes, small_filesystem
from wfl_async.errors import JobDiedError, PermanentFailureError, SystemNotReadyError
from wfl_async.job import RemoteJob
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote

JOBS = 6
OWNER = {"slurm": "root", "slurm_ssh": "wfltest", "local": "root"}
"""Who writes the run directory of each base system (the sshd's test user for ``*_ssh``)."""


def _small_system(expyre_root: Path, base: str, rundir: Path, **changes: object) -> str:
    """A copy of ``base`` in the test's own config.json with its run directory at ``rundir``."""
    config_file = expyre_root / "config.json"
    config = json.loads(config_file.read_text())
    config["systems"]["small"] = {**config["systems"][base], "rundir": str(rundir), **changes}
    config_file.write_text(json.dumps(config, indent=1))
    return "small"


def _jobs(tag: str, log: Path) -> list[RemoteJob]:
    return [RemoteJob(rf.big_result, (i, 100), sys_name="small", job_name=f"full {tag} {i}",
                      resources={"num_nodes": 1, "max_time": "10m"}, check_interval=0.3,
                      env_vars=[f"WFL_TEST_RUN_LOG={log}"]) for i in range(JOBS)]


async def _results(jobs: list[RemoteJob]) -> list[object]:
    """Each job's value, or the exception it raised."""
    out: list[object] = [None] * len(jobs)
    async with session_scope() as session:
        async def one(i: int) -> None:
            try:
                out[i] = await jobs[i].prepare(session).result()
            except Exception as exc:  # noqa: BLE001 - the test looks at each job's outcome
                out[i] = exc

        async with anyio.create_task_group() as tg:
            for i in range(len(jobs)):
                tg.start_soon(one, i)
    return out


def _leftovers(rundir: Path) -> list[str]:
    return [str(p) for p in rundir.rglob(".wfl_async_upload.*")]


@pytest.mark.parametrize("fill", ["blocks", "inodes"])
@pytest.mark.parametrize("base", ["slurm", "slurm_ssh"])
def test_a_full_run_directory_stops_the_call_at_once_and_a_rerun_after_freeing_it_runs_each_job_once(
        base: str, fill: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    log = Path(f"/tmp/wfl_async_exhaustion_{uuid.uuid4().hex[:8]}.log")  # the ssh test user writes it too
    log.touch()
    log.chmod(0o666)
    tag = uuid.uuid4().hex[:6]
    with small_filesystem(size="1m", nr_inodes=400 if fill == "inodes" else None, owner=OWNER[base]) as disk:
        rundir = disk / "run"
        _small_system(fresh_expyre_root, base, rundir)
        filler = fill_blocks(disk) if fill == "blocks" else fill_inodes(disk)
        started = time.monotonic()
        outcomes = anyio.run(_results, _jobs(tag, log))
        took = time.monotonic() - started
        print(f"\n{base} full ({fill}): stopped after {took:.1f} s: {outcomes[0]}")
        # out of blocks, the staging command fails; out of inodes, already the first-submission check
        expected = PermanentFailureError if fill == "blocks" else SystemNotReadyError
        for outcome in outcomes:
            assert isinstance(outcome, expected), outcome
            assert "no space left on device" in str(outcome) and "small" in str(outcome)
            assert str(rundir) in str(outcome) and "wfl-async clean" in str(outcome)
        assert took < 60
        assert log.read_text() == "", "a job ran although its call was stopped"
        assert _leftovers(disk) == []

        shutil.rmtree(filler) if filler.is_dir() else filler.unlink()
        outcomes = anyio.run(_results, _jobs(tag, log))
        assert outcomes == [rf.big_result(i, 100) for i in range(JOBS)]
        assert sorted(log.read_text().split(), key=int) == [str(i) for i in range(JOBS)], "a job ran twice or never"
        assert _leftovers(disk) == []
    log.unlink()


@pytest.mark.parametrize("base", ["slurm", "slurm_ssh"])
def test_a_job_that_fills_the_disk_is_reported_died_with_the_disk_named(base: str, fresh_expyre_root: Path) -> None:
    with small_filesystem(size="1m", owner=OWNER[base]) as disk:
        _small_system(fresh_expyre_root, base, disk / "run")
        job = RemoteJob(rf.fill_the_disk, (), sys_name="small", job_name=f"fill {uuid.uuid4().hex[:6]}",
                        resources={"num_nodes": 1, "max_time": "10m"}, check_interval=0.3)
        [outcome] = anyio.run(_results, [job])
        print(f"\n{base} filled by its job: {outcome}")
        assert isinstance(outcome, JobDiedError), outcome
        assert "is full" in str(outcome) and str(disk) in str(outcome) and "no space left on device" in str(outcome)
        assert "(failed, exit code " in str(outcome)  # Slurm's own account of it


RESULT_SIZE = 400_000


def test_a_full_local_stage_directory_while_fetching_keeps_every_result_whole_and_says_so(
        fresh_expyre_root: Path) -> None:
    log = Path(f"/tmp/wfl_async_exhaustion_{uuid.uuid4().hex[:8]}.log")
    log.touch()
    tag = uuid.uuid4().hex[:6]
    with small_filesystem(size="1500k") as stage:
        config_file = fresh_expyre_root / "config.json"
        config = json.loads(config_file.read_text())
        config["local_stage_dir"] = str(stage)
        config_file.write_text(json.dumps(config, indent=1))

        def jobs() -> list[RemoteJob]:
            return [RemoteJob(rf.big_result, (i, RESULT_SIZE), sys_name="slurm", job_name=f"fetch {tag} {i}",
                              resources={"num_nodes": 1, "max_time": "10m"}, check_interval=0.3,
                              env_vars=[f"WFL_TEST_RUN_LOG={log}"]) for i in range(JOBS)]

        want = [rf.big_result(i, RESULT_SIZE) for i in range(JOBS)]
        outcomes = anyio.run(_results, jobs())
        failed = [o for o in outcomes if isinstance(o, PermanentFailureError)]
        print(f"\nlocal stage full: {len(failed)} of {JOBS} stopped: {failed[0] if failed else None}")
        assert failed, "the local disk never filled"
        for got, expected in zip(outcomes, want, strict=True):
            assert got == expected or isinstance(got, PermanentFailureError), got  # whole, or not at all
        for error in failed:
            assert "no space left on device" in str(error) and str(stage) in str(error)
            assert "No result was half-written" in str(error)
        assert not list(stage.rglob(".wfl_async_fetch.*")), "a half-unpacked fetch was left behind"

        subprocess.run(["mount", "-o", "remount,size=16m", str(stage)], check=True)  # the user frees space
        assert anyio.run(_results, jobs()) == want
        assert sorted(log.read_text().split(), key=int) == [str(i) for i in range(JOBS)], "a job ran twice"
    log.unlink()
