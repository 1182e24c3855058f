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
