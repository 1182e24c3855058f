"""Many trivial jobs: wfl_async against the plain-sbatch floor and wfl + ExPyRe.

The acceptance run (loopback sshd + Slurm of the test infrastructure)::

    source /tmp/wfl_async_testinfra/env.sh
    python benchmarks/many_jobs.py

is ``python -m benchmarks.wfl_async_bench --systems slurm_ssh --jobs 50,200 --json many_jobs.json``;
any option given here replaces those defaults (see ``python -m benchmarks.wfl_async_bench --help``).
"""

from __future__ import annotations

import sys

from wfl_async_bench.__main__ import main, with_defaults

DEFAULTS = ["--systems", "slurm_ssh", "--jobs", "50,200", "--json", "many_jobs.json"]

if __name__ == "__main__":
    sys.argv = with_defaults(sys.argv, DEFAULTS)  # the report prints the equivalent command
    main(prog_name="many_jobs.py")
