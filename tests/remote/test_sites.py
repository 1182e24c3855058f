"""Whole workflows on Slurm through site-shaped logins, and ``wfl-async install`` into a fresh account.

Real parts only (scripts/testinfra/start_sshd_sites.sh): a two-factor sshd (key AND a TOTP code
from ``oathtool``), a jump host in front of it, and the account ``wflfresh`` whose pip has no
index (a cluster without internet). The driver runs as a workflow script in a subprocess; each
job appends its index to an execution log, so a job run twice, or never, shows.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.totp import SITES_SSH_CONFIG, askpass_env, prompts_answered

pytestmark = pytest.mark.remote

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, os, sys, time
import anyio
from wfl_async.job import RemoteJob

def work(i, log):
    import os, sys, time, wfl_async
    time.sleep(float(os.environ.get("WORK_SLEEP", "0")))
    if log:
        with open(log, "a") as f:
            f.write(f"{i}\\n")
    return [i, os.getuid(), sys.prefix, wfl_async.__file__]

async def main():
    options, n, log = json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    name = options.pop("job_name")
    results = {}
    async def one(i):
        results[i] = await RemoteJob(work, (i, log), job_name=f"{name}-{i}", **options)
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    with open(sys.argv[1], "w") as f:
        json.dump(results, f)
anyio.run(main)
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the remote users can write their execution log to."""
    path = Path(tempfile.mkdtemp(prefix="wfl_async_sites_", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def sockets() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))  # a socket's path must stay short
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _project(tmp_path: Path, expyre_root: Path, name: str, **changes: object) -> Path:
    """A config.json of the test's own: the checkout's ``slurm_ssh`` system, reached another way."""
    config = json.loads((expyre_root / "config.json").read_text())
    entry = dict(config["systems"]["slurm_ssh"])
    entry.pop("remsh_cmd", None)
    entry["rundir"] = f"wfl_async_run_sites/{uuid.uuid4().hex[:8]}"
    entry.update(changes)
    root = tmp_path / "expyre"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"systems": {name: entry}}, indent=1))
    return root


def _user_ssh_config(tmp_path: Path, sockets: Path) -> Path:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n    ControlMaster auto\n    ControlPath {sockets}/%C\n    ControlPersist 10m\n\n"
                      f"{SITES_SSH_CONFIG.read_text()}")
    return config


def _log_in(config: Path, host: str, tmp_path: Path) -> None:
    """What the user does once in a terminal (the code typed; here answered by SSH_ASKPASS)."""
    subprocess.run(["ssh", "-F", str(config), "-f", "-N", host], check=True, stdin=subprocess.DEVNULL,
                   env=dict(os.environ, **askpass_env(tmp_path)), timeout=120)


def _start(root: Path, tmp_path: Path, system: str, jobs: int, log: Path | str, sleep: float = 0,
           env: dict[str, str] | None = None, name: str = "site") -> tuple[subprocess.Popen[bytes], Path, Path]:
    script, output, errors = tmp_path / "workflow.py", tmp_path / "results.json", tmp_path / "driver.log"
    script.write_text(SCRIPT)
    options = {"sys_name": system, "job_name": f"{name}{uuid.uuid4().hex[:6]}", "partial_node": True,
               "resources": {"num_cores": 1, "max_time": "10m"}, "check_interval": 0.5,
               "env_vars": [f"WORK_SLEEP={sleep}"]}
    base = {k: v for k, v in os.environ.items() if not k.startswith("SSH_ASKPASS")}
    proc = subprocess.Popen([sys.executable, str(script), str(output), json.dumps(options), str(jobs), str(log)],
                            env=dict(base, EXPYRE_ROOT=str(root), PYTHONPATH=str(REPO), **(env or {})),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=errors.open("wb"))
    return proc, output, errors


def _finish(proc: subprocess.Popen[bytes], output: Path, errors: Path) -> dict[str, list[object]]:
    assert proc.wait(timeout=600) == 0, errors.read_text()[-4000:]
    return json.loads(output.read_text())


def _executions(log: Path) -> list[str]:
    return sorted(log.read_text().splitlines(), key=int)


def _wait_for(condition: object, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_openssh_controlmaster_two_factor_workflow_survives_the_master_killed_mid_run(
        expyre_root: Path, tmp_path: Path, shared_dir: Path, sockets: Path) -> None:
    """The user logged in once with a code; the master dies while jobs run; nobody can answer a new
    login's prompt, so the driver says how to log in and waits; after the login the run completes,
    every job once."""
    ssh_config = _user_ssh_config(tmp_path, sockets)
    root = _project(tmp_path, expyre_root, "mfa", host="wfl-async-mfa", transport="openssh",
                    ssh_config=str(ssh_config))
    _log_in(ssh_config, "wfl-async-mfa", tmp_path)
    prompts = prompts_answered()
    log = shared_dir / "executions.log"
    name = f"mfa{uuid.uuid4().hex[:6]}"
    proc, output, errors = _start(root, tmp_path, "mfa", jobs=4, log=log, sleep=4, name=name)

    def ours_running() -> bool:  # other checkouts' tests run jobs as wfltest too
        queue = subprocess.run(["squeue", "-h", "-u", "wfltest", "-o", "%j %T"], capture_output=True, text=True)
        return any(line.startswith(name) and line.endswith("RUNNING") for line in queue.stdout.splitlines())

    try:
        _wait_for(ours_running, "one of this driver's jobs running")
        check = subprocess.run(["ssh", "-F", str(ssh_config), "-O", "check", "wfl-async-mfa"],
                               capture_output=True, text=True)
        pid = int(re.search(r"pid=(\d+)", check.stderr).group(1))  # type: ignore[union-attr]
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "ssh"  # pids wrap: check before killing
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: "Log in again in a terminal with" in errors.read_text(), "the driver's login message")
        assert proc.poll() is None  # waiting, not failed
        assert prompts_answered() == prompts  # the driver asked nobody
        _log_in(ssh_config, "wfl-async-mfa", tmp_path)
        results = _finish(proc, output, errors)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["ssh", "-F", str(ssh_config), "-O", "exit", "wfl-async-mfa"], capture_output=True)
    assert sorted(results, key=int) == ["0", "1", "2", "3"] and all(r[1] == 2000 for r in results.values())
    assert _executions(log) == ["0", "1", "2", "3"], "a job ran twice, or never"
    assert "is back" in errors.read_text()


def test_asyncssh_two_factor_through_a_jump_host_answers_the_code_once(
        expyre_root: Path, tmp_path: Path, shared_dir: Path) -> None:
    root = _project(tmp_path, expyre_root, "mfa_jump", host="wfl-async-mfa-via-jump",
                    ssh_config=str(SITES_SSH_CONFIG))
    prompts = prompts_answered()
    log = shared_dir / "executions.log"
    proc, output, errors = _start(root, tmp_path, "mfa_jump", jobs=3, log=log, env=askpass_env(tmp_path))
    results = _finish(proc, output, errors)
    assert sorted(results, key=int) == ["0", "1", "2"]
    assert _executions(log) == ["0", "1", "2"]
    assert prompts_answered() == prompts + 1  # one connection, one code
    assert "DSA is deprecated" not in errors.read_text()  # no dependency warnings in the user's terminal


def test_install_into_a_fresh_account_without_an_index_then_a_workflow_runs_there(
        expyre_root: Path, tmp_path: Path, shared_dir: Path) -> None:
    ssh = ["ssh", "-F", str(SITES_SSH_CONFIG), "-o", "BatchMode=yes", "wfl-async-fresh"]
    subprocess.run([*ssh, "rm -rf .wfl_async wfl_async_run_sites"], check=True)  # a fresh account
    offline = subprocess.run([*ssh, "python3 -m pip download --no-deps -d /tmp/nothing cloudpickle"],
                             capture_output=True, text=True)
    assert offline.returncode != 0, "the fresh account's pip must have no index (a cluster without internet)"
    root = _project(tmp_path, expyre_root, "fresh", host="wfl-async-fresh", ssh_config=str(SITES_SSH_CONFIG),
                    commands=[])
    env = dict(os.environ, EXPYRE_ROOT=str(root), PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "wfl_async.cli", "install", "fresh", "--write-config"]
    for attempt in range(2):  # the second run must be as good as the first (rerunning is safe)
        done = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok: /home/wflfresh/.wfl_async/venv: Python 3.11" in done.stdout, done.stdout
        commands = json.loads((root / "config.json").read_text())["systems"]["fresh"]["commands"]
        assert commands == ["source /home/wflfresh/.wfl_async/venv/bin/activate"], (attempt, commands)
    log = shared_dir / "executions.log"
    proc, output, errors = _start(root, tmp_path, "fresh", jobs=2, log=log)
    results = _finish(proc, output, errors)
    for index, uid, prefix, module in results.values():
        assert uid == 2001 and prefix == "/home/wflfresh/.wfl_async/venv", (index, uid, prefix)
        assert str(module).startswith("/home/wflfresh/.wfl_async/venv/lib/"), module
    assert _executions(log) == ["0", "1"]
