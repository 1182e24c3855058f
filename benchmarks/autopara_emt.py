"""Autoparallelize workload: 2000 EMT configurations in 200 queued chunks.

wfl_async's ``calculate`` against the floor (the same 200 chunk job scripts submitted by a
plain ``sbatch`` loop on the cluster side) and wfl 0.3.5 + ExPyRe on the same workload,
with the reruns. The acceptance run (loopback sshd + Slurm of the test infrastructure)::

    source /tmp/wfl_async_testinfra/env.sh
    python benchmarks/autopara_emt.py --repeat 3

is ``python -m benchmarks.wfl_async_bench autopara --system slurm_ssh --configs 2000 --per-job 10
--subprocesses 0 --json autopara_emt.json --repeat 3``; any option given here replaces those
defaults (see ``python -m benchmarks.wfl_async_bench autopara --help``).
"""

from __future__ import annotations

import sys

from wfl_async_bench.__main__ import autopara_main, with_defaults

DEFAULTS = ["--system", "slurm_ssh", "--configs", "2000", "--per-job", "10", "--subprocesses", "0",
            "--json", "autopara_emt.json"]

if __name__ == "__main__":
    sys.argv = with_defaults(sys.argv, DEFAULTS)  # the report prints the equivalent command
    autopara_main(prog_name="autopara_emt.py")
