"""A queued job's start-up: what a chunk job imports before its operation runs.

Every queued chunk job imports the job worker and unpickles an in-memory ConfigSet,
OutputSpec and the pool; on a busy node that Python start-up is what a job's end-to-end time
cannot go below, so ase.io (and through it scipy) and wfl are left for the code that needs them.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

from ase.atoms import Atoms

from wfl_async._configset._in_job import IN_JOB
from wfl_async.autoparallelize.pool import do_in_pool
from wfl_async.configset import ConfigSet, OutputSpec

REPO = Path(__file__).resolve().parents[2]

_CHILD = """
import json, pickle, sys
import wfl_async.jobs.worker  # what the job runs first
objects = pickle.loads(sys.stdin.buffer.read())  # the task's ConfigSet and OutputSpec
heavy = sorted(m for m in sys.modules if m == "wfl" or m.startswith(("wfl.", "ase.io", "scipy")))
print(json.dumps({"heavy": heavy, "n": len(list(objects[0])), "bases": [b.__module__ for b in type(objects[0]).__mro__]}))
"""


def _child(environ: dict[str, str]) -> dict[str, object]:
    task = pickle.dumps((ConfigSet([Atoms("H"), Atoms("He")]), OutputSpec(), do_in_pool))
    done = subprocess.run([sys.executable, "-c", _CHILD], input=task, capture_output=True, check=True,
                          env={**environ, "PYTHONPATH": str(REPO)})
    return json.loads(done.stdout)


def test_a_job_unpickles_its_configset_without_importing_ase_io_scipy_or_wfl() -> None:
    environ = {k: v for k, v in os.environ.items() if k != IN_JOB}
    seen = _child({**environ, IN_JOB: "1"})
    assert seen["heavy"] == [] and seen["n"] == 2, seen


def test_outside_a_job_our_configset_is_still_a_wfl_configset_where_wfl_is_installed() -> None:
    environ = {k: v for k, v in os.environ.items() if k != IN_JOB}
    seen = _child(environ)
    assert "wfl.configset" in seen["bases"], seen  # wfl's operations check isinstance(…, wfl's class)
