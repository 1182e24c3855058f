"""Ctrl-C during a workflow: one line (interrupted, how many jobs stay queued, rerun to re-attach).

A real script in its own process gets a real SIGINT while its queued jobs run.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.remote

SCRIPT = textwrap.dedent('''
    import sys
    from tests.helpers.configs import cu_configs, slow_copy
    from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
    from wfl_async.configset import ConfigSet, OutputSpec

    info = AutoparaInfo(num_inputs_per_python_subprocess=1, remote_info=RemoteInfo(
        sys_name=sys.argv[1], job_name="ctrl_c_" + sys.argv[2], num_inputs_per_queued_job=1,
        resources={"num_nodes": 1, "max_time": "10m"}, check_interval=0.5))
    autoparallelize(slow_copy, ConfigSet(cu_configs(3)), OutputSpec(), 300, autopara_info=info)
''')


def submitted(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM jobs WHERE status IN ('submitted', 'started')").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_ctrl_c_prints_one_line_and_leaves_the_jobs_queued(tmp_path: Path, fresh_expyre_root: Path) -> None:
    system = "slurm"
    script = tmp_path / "workflow.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "WFL_ASYNC_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, str(script), system, tmp_path.name], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = fresh_expyre_root / "wfl_async_jobs.db"
    try:
        deadline = time.monotonic() + 120
        while submitted(db) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert submitted(db) == 3, proc.stderr.read() if proc.poll() is not None else "jobs not submitted"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=90)
        out_dir = os.environ.get("WFL_ASYNC_DOCTOR_OUTPUT_DIR")
        if out_dir:
            Path(out_dir, "ctrl_c.txt").write_text(f"{stderr}(exit status {proc.returncode})\n")
        assert proc.returncode != 0
        assert "Traceback" not in stderr and "concurrent.futures" not in stderr, stderr
        lines = [line for line in stderr.splitlines() if "interrupted" in line]
        assert lines == ["wfl_async: interrupted; 3 unfinished job(s) stay queued on their systems: rerun the "
                         "same script to re-attach to them (or 'wfl-async cancel' to cancel them)"], stderr
        assert submitted(db) == 3  # still queued, as the line says
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run([sys.executable, "-m", "wfl_async.cli", "cancel", "-y"], cwd=tmp_path, env=env,
                       capture_output=True, timeout=120)


DOUBLE_SCRIPT = textwrap.dedent('''
    import sys
    from ase.build import bulk
    from tests.helpers.remote_functions import logged_label
    from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo
    from wfl_async.configset import ConfigSet, OutputSpec

    configs = []
    for i in range(int(sys.argv[3])):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.01 * i, cubic=True)
        atoms.info["i"] = i
        configs.append(atoms)
    info = AutoparaInfo(num_inputs_per_python_subprocess=1, remote_info=RemoteInfo(
        sys_name=sys.argv[1], job_name="double_c", num_inputs_per_queued_job=1, check_interval=0.5,
        resources={"num_nodes": 1, "max_time": "10m"}, env_vars=["WFL_TEST_RUN_LOG=" + sys.argv[4]]))
    logged_label(ConfigSet(configs), OutputSpec(sys.argv[2]), autopara_info=info)
''')


def _count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _lines_of(stream: Any, into: list[tuple[float, str]]) -> None:
    for line in stream:
        into.append((time.monotonic(), line.rstrip("\n")))


@pytest.mark.parametrize("base", ["local", "slurm_ssh"])
def test_a_first_ctrl_c_says_what_it_waits_for_and_a_second_stops_now_losing_and_duplicating_nothing(
        base: str, tmp_path: Path, fresh_expyre_root: Path) -> None:
    import json
    import tempfile
    import threading

    from ase.io import read

    shared = Path(tempfile.mkdtemp(prefix="wfl_async_ctrl_c_", dir="/tmp"))
    shared.chmod(0o1777)  # the ssh test user writes the flags and the run log
    started, finished, log = shared / "submit_started", shared / "submit_finished", shared / "runs.log"
    config = json.loads((fresh_expyre_root / "config.json").read_text())
    # every scheduler command (the first-submission check's status, then the submission) counts
    config["systems"]["slow_submit"] = {**config["systems"][base], "pre_submit_cmds": [
        f"echo >> {started}", "sleep 15", f"echo >> {finished}"]}
    (fresh_expyre_root / "config.json").write_text(json.dumps(config))
    script, output, jobs = tmp_path / "workflow.py", tmp_path / "out.xyz", 4
    script.write_text(DOUBLE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "WFL_ASYNC_PROGRESS": "0"}
    args = [sys.executable, str(script), "slow_submit", str(output), str(jobs), str(log)]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=_lines_of, args=(proc.stderr, lines))
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while _count(started) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _count(started) == 2, "the submission never started"
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while not any("stopping:" in line for _, line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        said = [line for _, line in lines if "stopping:" in line]
        assert said == ["wfl_async: stopping: finishing the submission of 4 job(s), up to 60 s; Ctrl-C again to "
                        "stop now - the next run re-attaches"], lines
        assert _count(finished) == 1, "the line came only after the submission"  # it said so at once
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        assert _count(finished) == 1, "the second Ctrl-C waited for the submission"
        reader.join(timeout=10)
        text = "\n".join(line for _, line in lines)
        assert proc.returncode != 0 and "Traceback" not in text, text
        assert "interrupted;" in text
        print(f"\n{base}: {text}")

        deadline = time.monotonic() + 60  # the cut-short submission goes on without its driver
        while _count(finished) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        config["systems"]["slow_submit"]["pre_submit_cmds"] = []  # the rerun need not be slow
        (fresh_expyre_root / "config.json").write_text(json.dumps(config))
        rerun = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        got = read(output, ":")
        assert sorted(a.info["i"] for a in got) == list(range(jobs)), "a result is lost or doubled"
        time.sleep(2)  # a job submitted twice would have run by now too
        runs = sorted(log.read_text().split(), key=int)
        assert runs == [str(i) for i in range(jobs)], f"a job ran twice, or never: {runs}"
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run([sys.executable, "-m", "wfl_async.cli", "cancel", "-y"], cwd=tmp_path, env=env,
                       capture_output=True, timeout=120)
        subprocess.run(["rm", "-rf", str(shared)], check=False)
