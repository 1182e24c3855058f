"""GAP fit time here vs as one queued job on each system, and whether the potentials agree.

The fit is the tests' small problem (``tests/helpers/gap_data.py``: 2-body + small SOAP to EMT
energies and forces of 24 rattled 4-atom Al cells and an isolated atom), with one gap_fit thread
here and in the job. For each system: wall time of ``run_gap_fit`` called here (submit, wait,
copy back) against the same fit in this process, and the largest relative difference of the two
potentials' energies (quippy ``Potential``) over the 25 configurations.

    source /tmp/wfl_async_testinfra/env.sh
    python benchmarks/gap_fit_local_vs_queued.py [--systems 'regexp'] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.gap_data import al_training_configs, energies, simple_fit_dict  # noqa: E402
from wfl_async.config import load_config  # noqa: E402
from wfl_async.fit.gap.simple import run_gap_fit  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=".", help="regexp of the config's systems to use")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    os.environ["WFL_GAP_FIT_OMP_NUM_THREADS"] = "1"
    configs = al_training_configs()
    systems = list(load_config().systems)
    systems = [n for n in systems if re.search(args.systems, n)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gap_bench_") as work:
        os.chdir(work)
        local_times = []
        for r in range(args.repeat):
            start = time.perf_counter()
            local = run_gap_fit(configs, simple_fit_dict(f"local{r}/Al.xml"), f"local{r}/out", verbose=False,
                                remote_info="_IGNORE")
            local_times.append(time.perf_counter() - start)
        assert local is not None, "run_gap_fit returns the potential file's path"
        reference = energies(local, configs)
        for system in systems:
            for r in range(args.repeat):
                info = {"sys_name": system, "job_name": f"gap_bench_{system}_{r}_{os.getpid()}",
                        "resources": {"num_cores": 1, "max_time": "10m"}, "partial_node": True,
                        "check_interval": 0.2, "env_vars": ["WFL_GAP_FIT_OMP_NUM_THREADS=1"]}
                start = time.perf_counter()
                queued = run_gap_fit(configs, simple_fit_dict(f"{system}{r}/Al.xml"), f"{system}{r}/out",
                                     verbose=False, remote_info=info)
                elapsed = time.perf_counter() - start
                assert queued is not None
                rel = float(np.max(np.abs(energies(queued, configs) - reference) / np.abs(reference)))
                rows.append({"system": system, "queued_s": elapsed, "max_rel_energy_diff": rel})
                print(f"{system:10s} queued {elapsed:6.2f} s   max relative energy difference {rel:.1e}")
    print(f"{'here':10s} local  {min(local_times):6.2f} s (best of {len(local_times)})")
    print(json.dumps({"local_s": local_times, "queued": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
