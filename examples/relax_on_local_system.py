"""The main job: a real wfl-style workflow on the built-in ``local`` system, no cluster needed.

Relaxes 40 rattled copper cells with ASE's EMT calculator. The operation is split into
queued jobs of 4 configurations, all submitted at once to the ``local`` system (background
processes on this machine, at most one per core); each chunk's results are written to
``relaxed.xyz`` as soon as its job finishes. Run it twice: the second run finds the
output complete and returns at once. Delete ``relaxed.xyz`` and set
``WFL_EXPYRE_NO_MARK_PROCESSED=1`` on both runs to see a rerun re-attach to the finished jobs.

Moving this to a cluster changes no line here: put the cluster in an ExPyRe ``config.json``
and point ``WFL_EXPYRE_INFO`` at it (see docs/remote-info.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.generate.optimize import optimize


def make_structures(path: Path, count: int = 40) -> None:
    rng = np.random.default_rng(42)
    cells = []
    for i in range(count):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 1)
        atoms.rattle(0.1, rng=rng)
        atoms.info["structure"] = i
        cells.append(atoms)
    write(path, cells)


def main() -> int:
    workdir = Path(sys.argv[1] if len(sys.argv) > 1 else "example_run")
    workdir.mkdir(exist_ok=True)
    infile = workdir / "structures.xyz"
    if not infile.exists():
        make_structures(infile)

    remote_info = RemoteInfo(sys_name="local", job_name="relax_cu",
                             resources={"num_cores": 1, "max_time": "30m"}, partial_node=True,
                             num_inputs_per_queued_job=4, check_interval=0.5,
                             env_vars=["WFL_NUM_PYTHON_SUBPROCESSES=0"])
    start = time.perf_counter()
    relaxed = optimize(ConfigSet(infile), OutputSpec("relaxed.xyz", file_root=workdir),
                       calculator=(EMT, [], {}), fmax=0.05, steps=200, traj_subselect="last",
                       autopara_info=AutoparaInfo(remote_info=remote_info))
    elapsed = time.perf_counter() - start

    final = [atoms for atoms in relaxed]
    energies = [atoms.info["last_op__optimize_energy"] for atoms in final]
    print(f"relaxed {len(final)} configurations in {elapsed:.1f} s "
          f"-> {workdir / 'relaxed.xyz'}")
    print(f"EMT energy per cell: min {min(energies):.4f} eV, max {max(energies):.4f} eV")
    return 0


if __name__ == "__main__":
    sys.exit(main())
