"""Job arrays on the real Slurm and SGE, directly and over ssh: chunks of one call as array tasks.

Each test uses a copy of the system whose PATH starts with a counting wrapper in front of the
real submit program (``pre_submit_cmds`` of a test-owned config.json): it logs every scheduler
submission with the number of tasks it carried, so "few scheduler calls" and "the rerun
submitted nothing" are read from what the scheduler was really asked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read

from tests.conftest import remote_system_names
from tests.helpers import remote_functions as rf
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.errors import JobDiedError
from wfl_async.jobs.database import JobStatus
from wfl_async.scheduler import get_scheduler
from wfl_async.session import session_scope

pytestmark = pytest.mark.remote

REPO = Path(__file__).resolve().parents[2]
SUBMIT_PROGRAMS = {"slurm": "sbatch", "sge": "qsub"}
WRAPPER = """#!/bin/sh
n=1; [ -r tasks ] && n=$(wc -l < tasks)
echo "$n" >> __DIR__/submits
if [ -e __DIR__/hang ]; then  # submit, then never answer (until killed), once
    rm -f __DIR__/hang; __REAL__ "$@" >/dev/null 2>&1; echo $$ > __DIR__/hung; exec sleep 600
fi
exec __REAL__ "$@"
"""
DRIVER = """
import logging, sys
from ase.build import bulk
from wfl_async.configset import ConfigSet, OutputSpec
from tests.helpers.remote_functions import logged_label

configs = []
for i in range(int(sys.argv[2])):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.info["i"] = i
    configs.append(atoms)
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
logged_label(ConfigSet(configs), OutputSpec(sys.argv[1]))   # WFL_EXPYRE_INFO says where
"""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "array_system" in metafunc.fixturenames:
        names = ["slurm", "sge"] if metafunc.definition.get_closest_marker("direct_only") else \
            ["slurm", "slurm_ssh", "sge", "sge_ssh"]
        if metafunc.config.getoption("--runremote"):
            names = [n for n in remote_system_names() if n in names]
        metafunc.parametrize("array_system", names)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the jobs of every system can write to (over ssh they run as another user)."""
    path = Path(f"/tmp/wfl_async_arrays_{uuid.uuid4().hex[:10]}")
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def counted_system(array_system: str, fresh_expyre_root: Path, shared_dir: Path) -> str:
    """A copy of ``array_system`` whose submit program logs each call's task count to ``shared_dir/submits``."""
    config = json.loads((fresh_expyre_root / "config.json").read_text())
    entry = dict(config["systems"][array_system])
    program = SUBMIT_PROGRAMS[entry["scheduler"]]
    bin_dir = shared_dir / "bin"
    bin_dir.mkdir()
    bin_dir.chmod(0o755)
    log = shared_dir / "submits"
    log.touch(mode=0o666)
    log.chmod(0o666)
    real = shutil.which(program)
    assert real, f"{program} not found"
    (bin_dir / program).write_text(WRAPPER.replace("__DIR__", str(shared_dir)).replace("__REAL__", real))
    (bin_dir / program).chmod(0o755)
    entry["pre_submit_cmds"] = [f"export PATH={bin_dir}:$PATH", *entry.get("pre_submit_cmds", [])]
    entry["submit"] = "array"  # the system's default; a call may say otherwise
    name = f"{array_system}_counted"
    config["systems"][name] = entry
    (fresh_expyre_root / "config.json").write_text(json.dumps(config, indent=1))
    return name


def submissions(shared_dir: Path) -> list[int]:
    """Task count of each scheduler submission so far (1 for a job submitted alone)."""
    return [int(n) for n in (shared_dir / "submits").read_text().split()]


def cli(*args: str) -> str:
    """``wfl-async ARGS`` in a process of its own (as a user runs it); its output."""
    done = subprocess.run([sys.executable, "-m", "wfl_async.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def cells(n: int) -> list[Atoms]:
    out = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.info["i"] = i
        out.append(atoms)
    return out


class Workflow:
    """A workflow script labelling ``n`` configurations in chunks of one on ``system``, run as a
    process of its own (so that it can be killed); every run computes the same jobs."""

    def __init__(self, system: str, shared_dir: Path, tmp_path: Path, n: int, sleep: float) -> None:
        self.system, self.n, self.sleep, self.cwd = system, n, sleep, tmp_path
        self.output = tmp_path / "labelled.xyz"
        self.run_log = shared_dir / "executions.log"
        self.run_log.touch(mode=0o666)
        self.run_log.chmod(0o666)
        (tmp_path / "workflow.py").write_text(DRIVER)

    def start(self, submit: str) -> subprocess.Popen[bytes]:
        # the environment is not part of the job key; SGE and ssh jobs do not inherit the
        # driver's, so the log's path goes in env_vars
        info = {"sys_name": self.system, "job_name": f"arrays-{self.system}",
                "resources": {"num_nodes": 1, "max_time": "10m"}, "num_inputs_per_queued_job": 1,
                "check_interval": 0.3, "env_vars": [f"WFL_TEST_SLEEP={self.sleep}", f"WFL_TEST_RUN_LOG={self.run_log}"],
                "submit": submit}
        env = dict(os.environ, PYTHONPATH=str(REPO), WFL_EXPYRE_INFO=json.dumps(
            {"workflow.py::<module>,helpers/remote_functions.py::logged_label": info}))
        return subprocess.Popen([sys.executable, "workflow.py", str(self.output), str(self.n)], env=env, cwd=self.cwd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def rerun_to_the_end(self, submit: str) -> str:
        """Run it again until it ends; check every result came, in order, computed once; its log."""
        rerun = self.start(submit)
        _, err = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, err.decode()[-3000:]
        got = read(self.output, ":")
        assert [a.info["i"] for a in got] == list(range(self.n))
        assert all(a.info["labelled"] for a in got)
        executed = sorted(int(i) for line in self.run_log.read_text().splitlines() for i in line.split())
        assert executed == list(range(self.n)), "some configuration was computed twice, or never"
        return err.decode()


def test_array_tasks_give_results_in_order_and_a_rerun_after_kill_9_submits_nothing(
        counted_system: str, shared_dir: Path, tmp_path: Path) -> None:
    n = 10
    workflow = Workflow(counted_system, shared_dir, tmp_path, n, sleep=2)
    first = workflow.start(submit="array")  # the system says "array" too; the call's word wins either way
    deadline = time.monotonic() + 120
    while sum(submissions(shared_dir)) < n:
        assert first.poll() is None, first.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, f"the chunks were not all submitted: {submissions(shared_dir)}"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # every chunk submitted, none finished (each sleeps 2 s)
    first.communicate(timeout=60)
    submitted = submissions(shared_dir)
    assert len(submitted) <= 2 and all(count > 1 for count in submitted), \
        f"{n} chunks should go as one or two arrays, not {submitted}"

    workflow.rerun_to_the_end(submit="loop")  # another mode: not in the job key, so it re-attaches
    assert submissions(shared_dir) == submitted, "the rerun submitted again"


@pytest.mark.direct_only
def test_a_driver_killed_while_the_array_submission_hangs_is_resolved_without_a_duplicate(
        counted_system: str, shared_dir: Path, tmp_path: Path) -> None:
    # the submit program queues the array and never answers: no task's answer is written, so the
    # rerun must find the tasks in the queue, by their array's directory and its task list
    (shared_dir / "hang").touch()
    workflow = Workflow(counted_system, shared_dir, tmp_path, 4, sleep=6)
    first = workflow.start(submit="array")
    deadline = time.monotonic() + 120
    while not (shared_dir / "hung").exists():
        assert first.poll() is None, first.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "the submission did not start"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.kill(int((shared_dir / "hung").read_text()), signal.SIGKILL)
    assert submissions(shared_dir) == [4]

    log = workflow.rerun_to_the_end(submit="array")
    assert submissions(shared_dir) == [4], "the rerun submitted again"
    # each task found in the queue, or (on a slow machine) already run by the time the rerun looks
    assert log.count("an earlier submission had queued it") + log.count("an earlier submission ran it") == 4, \
        log[-3000:]


async def test_cancel_of_one_array_task_then_resubmit_killed_jobs_resubmits_that_task_alone(
        array_system: str, fresh_expyre_root: Path, counted_system: str, shared_dir: Path) -> None:
    inputs = cells(3)
    inputs[0].info["slow"] = True
    job_name = f"arrays-cancel-{array_system}"

    def info(**kwargs: Any) -> AutoparaInfo:
        # submit="array" per call, on the plain system (whose own default is the loop)
        return AutoparaInfo(remote_info=RemoteInfo(
            sys_name=array_system, job_name=job_name, resources={"num_nodes": 1, "max_time": "10m"},
            num_inputs_per_queued_job=1, check_interval=0.3, submit="array", **kwargs))

    died: list[BaseException] = []

    async def first_run() -> None:
        try:
            await autoparallelize.aio(rf._label_slow_if_marked, ConfigSet(inputs), OutputSpec(),
                                      autopara_info=info(env_vars=["WFL_TEST_SLEEP=300"]))
        except JobDiedError as exc:
            died.append(exc)

    async with session_scope() as session, anyio.create_task_group() as tg:
        tg.start_soon(first_run)
        with anyio.fail_after(120):  # the two fast chunks finish; the slow one runs
            while len(await session.db.select(status=["succeeded", "processed"])) < 2 or \
                    not await session.db.select(status=["started"]):
                await anyio.sleep(0.2)
        records = await session.db.select()
        scheduler = get_scheduler(session.system(array_system).config.scheduler)
        parents = {scheduler.array_parent_id(r.remote_id or "") for r in records}
        assert len(parents) == 1 and None not in parents, [r.remote_id for r in records]
        (slow,) = await session.db.select(status=["started"])
        assert session.system(array_system).array_count([r.job_dir for r in records]) == 1  # the progress line's
        listed = await anyio.to_thread.run_sync(cli, "ls", "-S", array_system)
        assert slow.remote_id in listed  # its own task id
        table = await anyio.to_thread.run_sync(cli, "status", "-S", array_system)
        (row,) = [line.split() for line in table.splitlines() if line.split()[:1] == [array_system]]
        assert row[-1] == "1", f"one array in flight: {table}"
        # that task alone killed by the scheduler (as an admin or a node failure would): it died
        # (a 'wfl-async cancel' would make it cancelled, which resubmit_killed_jobs leaves alone)
        await session.system(array_system).control("cancel", [slow.remote_id or ""])
    assert died, "the first run should have raised JobDiedError for the killed task"

    async with session_scope() as session:
        (record,) = await session.db.select(status=["died"])
        assert record.key == slow.key
    out = await autoparallelize.aio(rf._label_slow_if_marked, ConfigSet(inputs), OutputSpec(),
                                    autopara_info=info(resubmit_killed_jobs=True))
    assert [a.info["i"] for a in out] == [0, 1, 2]
    assert all(a.info["labelled"] for a in out)
    async with session_scope() as session:
        records = {r.key: r for r in await session.db.select()}
    assert records[slow.key].status is JobStatus.PROCESSED
    assert scheduler.array_parent_id(records[slow.key].remote_id or "") is None, "resubmitted alone: a plain job"
