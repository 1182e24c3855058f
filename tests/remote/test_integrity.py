"""Nothing half-written is ever used, one writer per output, private files: kill -9 and two drivers.

Each test drives real workflow scripts in subprocesses against a real system and injects the
fault into them: the driver is killed with SIGKILL while a multi-MB input is being staged or
large results are being fetched (found running in /proc, then a random moment later), or two
drivers start together on the same output. Every job appends one line per execution to a log
in a directory the systems' users can write, so a duplicate submission shows as a line twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ase.io import read

from tests.helpers import remote_functions as rf
from tests.helpers.processes import kill_during
from wfl_async.job import RemoteJob
from wfl_async.session import session_scope
from wfl_async.system.paths import project_key

pytestmark = pytest.mark.remote

REPO = Path(__file__).resolve().parents[2]
INPUT_SIZE = 12 * 1024 * 1024
RESULT_SIZE = 6 * 1024 * 1024


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every system's user (root locally, wfltest over ssh) can write to."""
    path = Path(tempfile.mkdtemp(prefix="wfl_async_integrity_", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _executions(log: Path) -> list[str]:
    return sorted(line for line in log.read_text().splitlines()) if log.exists() else []


STAGING_SCRIPT = """
import json, sys
from ase.build import bulk
from wfl_async.configset import ConfigSet, OutputSpec
from tests.helpers.remote_functions import digest_input
from wfl_async.autoparallelize import RemoteInfo
configs = []
for i in range(8):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.info["i"] = i
    configs.append(atoms)
info = RemoteInfo(**json.loads(sys.argv[2]))
digest_input(ConfigSet(configs), OutputSpec(sys.argv[1]), autopara_info={"remote_info": info})
"""


def test_driver_killed_while_staging_a_large_input_then_rerun_gives_right_results_once(
        remote_system: str, fresh_expyre_root: Path, tmp_path: Path, shared_dir: Path) -> None:
    rng = random.Random()
    (tmp_path / "big input.bin").write_bytes(os.urandom(INPUT_SIZE))
    expected = hashlib.sha256((tmp_path / "big input.bin").read_bytes()).hexdigest()  # the serial answer
    log, output, script = shared_dir / "executions.log", tmp_path / "out.xyz", tmp_path / "workflow.py"
    script.write_text(STAGING_SCRIPT)
    info = {"sys_name": remote_system, "job_name": f"staging-{uuid.uuid4().hex[:6]}",
            "resources": {"num_cores": 1, "max_time": "10m"}, "partial_node": True, "num_inputs_per_queued_job": 2,
            "check_interval": 0.3, "input_files": ["big input.bin"],
            "env_vars": [f"WFL_TEST_RUN_LOG={log}", "WFL_TEST_INPUT='big input.bin'"]}
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(script), str(output), json.dumps(info)], env=env,
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    # the upload's tar, unpacking into its temporary directory under THIS test's remote root (the
    # project key names it): other tests' uploads run at the same time under pytest-xdist
    upload = ["tar", ".wfl_async_upload.", project_key(fresh_expyre_root)]
    landed = []
    for _ in range(3):
        proc = start()
        landed.append(kill_during(proc, upload, rng))
        if landed[-1] == "finished first":  # an earlier run's upload had landed whole: nothing left to stage
            break
    print(f"kills while staging on {remote_system}: {landed}")
    assert "during" in landed, landed
    if landed[-1] != "finished first":
        assert not output.exists()
        proc = start()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    got = read(output, ":")
    assert [a.info["i"] for a in got] == list(range(8))
    assert {a.info["input_sha256"] for a in got} == {expected}, "a job ran on a truncated input"
    executed = sorted(int(i) for line in _executions(log) for i in line.split())
    assert executed == list(range(8)), "a configuration was computed twice, or never"


FETCH_SCRIPT = """
import hashlib, json, sys
import anyio
from tests.helpers.remote_functions import big_result
from wfl_async.job import RemoteJob

async def main():
    options, size = json.loads(sys.argv[2]), int(sys.argv[3])
    name = options.pop("job_name")
    digests = {}
    async def one(i):
        value = await RemoteJob(big_result, (i, size), job_name=f"{name}-{i}", **options)
        digests[i] = hashlib.sha256(value).hexdigest()
    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(one, i)
    with open(sys.argv[1], "w") as f:
        json.dump(digests, f)
anyio.run(main)
"""


def test_driver_killed_while_fetching_large_results_then_rerun_gives_right_results_once(
        remote_system: str, fresh_expyre_root: Path, tmp_path: Path, shared_dir: Path) -> None:
    rng = random.Random()
    log, output, script = shared_dir / "executions.log", tmp_path / "digests.json", tmp_path / "workflow.py"
    script.write_text(FETCH_SCRIPT)
    name = f"bigresult{uuid.uuid4().hex[:6]}"
    options = {"sys_name": remote_system, "job_name": name, "resources": {"num_cores": 1, "max_time": "10m"},
               "partial_node": True, "check_interval": 0.3, "env_vars": [f"WFL_TEST_RUN_LOG={log}"]}
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(script), str(output), json.dumps(options), str(RESULT_SIZE)],
                                env=env,
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    landed = []
    for _ in range(3):  # the fetch's tar, packing finished results, is running
        landed.append(kill_during(start(), ["tar", "--ignore-failed-read", name], rng, within=0.05))
    print(f"kills while fetching on {remote_system}: {landed}")
    proc = start()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    serial = {str(i): hashlib.sha256(rf.big_result(i, RESULT_SIZE)).hexdigest() for i in range(6)}
    assert json.loads(output.read_text()) == serial
    assert sorted(_executions(log), key=int) == [str(i) for i in range(6)], "a job ran twice, or never"


TWO_DRIVERS_SCRIPT = """
import json, sys
from ase.build import bulk
from wfl_async.configset import ConfigSet, OutputSpec
from tests.helpers.remote_functions import logged_label
from wfl_async.autoparallelize import RemoteInfo
configs = []
for i in range(12):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.info["i"] = i
    configs.append(atoms)
out = logged_label(ConfigSet(configs), OutputSpec(sys.argv[1]),
                   autopara_info={"remote_info": RemoteInfo(**json.loads(sys.argv[2]))})
print(len(list(out)))
"""


def test_two_drivers_started_together_on_the_same_output_write_it_once(
        remote_system: str, fresh_expyre_root: Path, tmp_path: Path, shared_dir: Path) -> None:
    log, output, script = shared_dir / "executions.log", tmp_path / "labelled.xyz", tmp_path / "workflow.py"
    script.write_text(TWO_DRIVERS_SCRIPT)
    info = {"sys_name": remote_system, "job_name": f"twice-{uuid.uuid4().hex[:6]}",
            "resources": {"num_cores": 1, "max_time": "10m"}, "partial_node": True, "num_inputs_per_queued_job": 3,
            "check_interval": 0.3, "env_vars": [f"WFL_TEST_RUN_LOG={log}", "WFL_TEST_SLEEP=1"]}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, str(script), str(output), json.dumps(info)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    answers = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, answers, strict=True):
        assert proc.returncode == 0, err.decode()[-3000:]
        assert out.decode().split() == ["12"]  # both return the whole output
    errors = [err.decode() for _, err in answers]
    waited = [e for e in errors if "is being written by pid" in e]
    # exactly one wrote the output, the other reused it: it waited for the writer when it came
    # while the output was being written (not when the writer had already finished)
    assert sum("Reusing existing output" in e for e in errors) == 1, errors
    assert len(waited) <= 1, waited
    if waited:
        assert str(procs[0].pid if waited[0] is errors[1] else procs[1].pid) in waited[0]
    got = read(output, ":")
    assert [a.info["i"] for a in got] == list(range(12)) and all(a.info["labelled"] for a in got)
    executed = sorted(int(i) for line in _executions(log) for i in line.split())
    assert executed == list(range(12)), "some configuration was computed twice, or never"


async def test_job_files_and_the_jobs_database_are_private_on_both_sides(
        remote_system: str, fresh_expyre_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("input.txt").write_text("secret input")
    Path("input.txt").chmod(0o644)
    job = RemoteJob(rf.read_env_and_files, ("input.txt", "output.txt", "X"), sys_name=remote_system,
                    job_name=f"private-{uuid.uuid4().hex[:6]}", resources={"num_cores": 1, "max_time": "10m"},
                    partial_node=True, check_interval=0.3, input_files=["input.txt"], output_files=["output.txt"])
    async with session_scope() as session:
        prepared = job.prepare(session)
        await prepared.result()
        root = await prepared.system.remote_root()
        names = [".", "_wfl_async_task.pkl", "input.txt", "_wfl_async_result.pkl", "_wfl_async_succeeded",
                 "output.txt", "_wfl_async_worker.log"]
        listing = await prepared.system.transport.run(
            f"cd {shlex.quote(root)}/{shlex.quote(prepared.job_dir)} && stat -c '%a %U' {' '.join(names)} && "
            f"stat -c '%a' {shlex.quote(root)}", kind="probe")
        lines = listing.stdout.decode().splitlines()
        owner = lines[0].split()[1]
        remote_modes = dict(zip(names, [line.split()[0] for line in lines[:-1]], strict=True))
        assert remote_modes == {".": "700", **{n: "600" for n in names[1:]}}, remote_modes
        assert lines[-1] == "700"  # the project's directory of job directories
        assert owner == ("wfltest" if prepared.system.config.host else "root")
        stage = session.stage_root
        local = {p.relative_to(stage).as_posix(): oct(p.stat().st_mode & 0o777)
                 for p in [stage, *(stage / prepared.job_dir).iterdir()]}
        assert local["."] == "0o700"
        db = session.db.path
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    for sibling in db.parent.glob(db.name + "-*"):  # -wal, -shm
        assert oct(sibling.stat().st_mode & 0o777) == "0o600", sibling
