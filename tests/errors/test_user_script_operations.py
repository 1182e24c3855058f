"""An operation defined in the user's own script (``__main__``), locally and in queued jobs.

Each case runs a real script in its own Python process, as a user runs a workflow, so the
operation really lives in ``__main__`` (in a test module it would not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    import json, os, sys, threading
    from ase import Atoms
    from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
    from wfl_async.configset import ConfigSet, OutputSpec
    from wfl_async.errors import UnpicklableOperationError

    LOCK = threading.Lock()

    def tag_pid(atoms):
        out = []
        for at in atoms:
            at = at.copy()
            at.info["pid"] = os.getpid()
            out.append(at)
        return out

    def uses_a_lock(atoms):
        with LOCK:
            return list(atoms)

    def run(op, sys_name):
        remote = None if sys_name == "-" else RemoteInfo(
            sys_name=sys_name, job_name="user_script_" + op.__name__ + "_" + sys.argv[2],
            resources={"num_nodes": 1, "max_time": "10m"}, num_inputs_per_queued_job=4, check_interval=0.5)
        info = AutoparaInfo(num_python_subprocesses=2, num_inputs_per_python_subprocess=1, remote_info=remote)
        configs = [Atoms("H", positions=[[0, 0, i]]) for i in range(4)]
        return list(autoparallelize(tag_pid, ConfigSet(configs), OutputSpec(), autopara_info=info)
                    if op is tag_pid else
                    autoparallelize(op, ConfigSet(configs), OutputSpec(), autopara_info=info))

    sys_name = sys.argv[1]
    result = {"pids": sorted({at.info["pid"] for at in run(tag_pid, sys_name)}), "driver": os.getpid()}
    try:
        run(uses_a_lock, sys_name)
    except UnpicklableOperationError as exc:
        result["error"] = str(exc)
    print("RESULT", json.dumps(result))
''')


def run_script(tmp_path: Path, system: str) -> dict[str, object]:
    script = tmp_path / "my_workflow.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "WFL_ASYNC_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, str(script), system, tmp_path.name], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    return json.loads(lines[-1][len("RESULT "):])


def test_local_pool_runs_a_main_operation_in_subprocesses_and_names_an_unpicklable_one(tmp_path: Path) -> None:
    result = run_script(tmp_path, "-")
    pids = result["pids"]
    assert isinstance(pids, list) and result["driver"] not in pids  # really in pool subprocesses
    error = str(result["error"])
    assert error.startswith("cannot pickle the call to ") and "define the function at module level" in error


@pytest.mark.remote
def test_main_operation_runs_in_a_queued_jobs_pool_and_errors_match_the_local_ones(
        tmp_path: Path, remote_system: str, fresh_expyre_root: Path) -> None:
    """In the job, the in-job pool gets the by-value function from cloudpickle, as the driver sent it."""
    remote = run_script(tmp_path, remote_system)
    assert remote["pids"] and remote["driver"] not in remote["pids"]
    local = run_script(tmp_path, "-")
    assert remote["error"] == local["error"]
