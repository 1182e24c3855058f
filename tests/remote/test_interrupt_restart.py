"""Kill a workflow script at any moment (SIGKILL, Ctrl-C), rerun it: every result exactly once.

Runs on the systems whose jobs can write to a log file next to the test (the direct ones); the
log records every configuration each execution handled, so a duplicate submission would show
as a configuration computed twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ase.io import read

pytestmark = pytest.mark.remote

SCRIPT = """
import signal, sys
# as in a terminal: Ctrl-C raises KeyboardInterrupt (a background parent may have ignored SIGINT)
signal.signal(signal.SIGINT, signal.default_int_handler)
import numpy as np
from ase.build import bulk
from wfl_async.configset import ConfigSet, OutputSpec
from tests.helpers.remote_functions import logged_label

configs = []
for i in range(60):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.info["i"] = i
    configs.append(atoms)
logged_label(ConfigSet(configs), OutputSpec(sys.argv[1]))   # WFL_EXPYRE_INFO says where
"""


@pytest.mark.parametrize("system", ["slurm", "local"])
def test_killed_and_interrupted_runs_then_a_rerun_give_every_result_once(
        system: str, fresh_expyre_root: Path, tmp_path: Path) -> None:
    log = tmp_path / "executions.log"
    script = tmp_path / "workflow.py"
    script.write_text(SCRIPT)
    output = tmp_path / "labelled.xyz"
    env = dict(os.environ, WFL_TEST_RUN_LOG=str(log), PYTHONPATH=str(Path(__file__).resolve().parents[2]),
               WFL_EXPYRE_INFO=json.dumps({"workflow.py::<module>,helpers/remote_functions.py::logged_label": {
                   "sys_name": system, "job_name": f"interrupted-{system}",
                   "resources": {"num_nodes": 1, "max_time": "10m"}, "num_inputs_per_queued_job": 3,
                   "check_interval": 0.3, "env_vars": ["WFL_TEST_SLEEP=3"]}}))

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(script), str(output)], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    # interrupt at several moments: while claiming/submitting, while waiting, while collecting
    for delay, sig in ((0.8, signal.SIGKILL), (1.5, signal.SIGINT), (2.5, signal.SIGKILL), (4.0, signal.SIGKILL)):
        proc = start()
        time.sleep(delay)
        proc.send_signal(sig)
        proc.communicate(timeout=120)
        if proc.returncode != 0 and output.exists():  # killed after it had written the whole output
            assert [a.info["i"] for a in read(output, ":")] == list(range(60)), \
                "an interrupted run must not leave a partial output file"

    proc = start()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]

    got = read(output, ":")
    assert [a.info["i"] for a in got] == list(range(60))
    assert all(a.info["labelled"] for a in got)
    # one line per execution of the op (inside a job, its pool calls it per item): a job
    # submitted twice would execute its items twice
    executed = sorted(int(i) for line in log.read_text().splitlines() for i in line.split())
    assert executed == list(range(60)), "some configuration was computed twice, or never"


def test_ctrl_c_to_the_process_group_while_submitting_on_local_then_a_rerun_gives_every_result_once(
        fresh_expyre_root: Path, tmp_path: Path) -> None:
    # A terminal's Ctrl-C goes to the whole foreground process group: the driver, and every
    # shell it runs. The local system's jobs run in their own session, so they carry on, and a
    # submission cut short leaves a lock the rerun resolves (the job found, or submitted).
    log = tmp_path / "executions.log"
    script = tmp_path / "workflow.py"
    script.write_text(SCRIPT)
    output = tmp_path / "labelled.xyz"
    env = dict(os.environ, WFL_TEST_RUN_LOG=str(log), PYTHONPATH=str(Path(__file__).resolve().parents[2]),
               WFL_EXPYRE_INFO=json.dumps({"workflow.py::<module>,helpers/remote_functions.py::logged_label": {
                   "sys_name": "local", "job_name": "ctrl-c-local",
                   "resources": {"num_nodes": 1, "max_time": "10m"}, "num_inputs_per_queued_job": 3,
                   "check_interval": 0.3, "env_vars": ["WFL_TEST_SLEEP=2"]}}))

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(script), str(output)], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    for delay in (0.7, 1.2, 1.8):
        proc = start()
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=120)
    proc = start()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    got = read(output, ":")
    assert [a.info["i"] for a in got] == list(range(60))
    executed = sorted(int(i) for line in log.read_text().splitlines() for i in line.split())
    assert executed == list(range(60)), "some configuration was computed twice, or never"
