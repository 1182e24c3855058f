"""A stand-in for ACE1pack's ace_fit.jl (not installable here): same command line, same files.

The tests copy this file where the fit runs and point ``WFL_ACE_FIT_COMMAND`` at it. It reads
``--params``, checks the fitting database it names, and writes what ace_fit.jl writes: the
potential's JSON (``ACE_fname``), or with ``--dry-run`` the ``.size`` file.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import ase.io
import yaml

parser = argparse.ArgumentParser()
parser.add_argument("--params", required=True)
parser.add_argument("--dry-run", action="store_true")
parser.add_argument("--num-blas-threads", type=int)
args = parser.parse_args()
params = yaml.safe_load(Path(args.params).read_text())
configs = ase.io.read(params["data"]["fname"], ":")
energies = [at.info[params["data"]["energy_key"]] for at in configs]
base = Path(params["ACE_fname"]).with_suffix("")
print(f"stand-in ace_fit: {len(configs)} configs, e0 {params['e0']}")
print("stand-in warning", file=sys.stderr)
if args.dry_run:
    base.with_suffix(".size").write_text(json.dumps({"lsq_matrix_shape": [len(configs), 7]}))
else:
    Path(params["ACE_fname"]).write_text(json.dumps({
        "stand_in": True, "n_configs": len(configs), "mean_energy": sum(energies) / len(energies),
        "e0": params["e0"], "basis": params["basis"], "in_queued_job": "EXPYRE_NUM_CORES" in os.environ}))
