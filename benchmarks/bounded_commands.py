"""Any number of jobs, bounded commands: 10,000 held jobs in flight, re-attach to 10,000 finished.

    source /tmp/wfl_async_testinfra/checkouts/NAME/env.sh   # or /tmp/wfl_async_testinfra/env.sh
    PYTHONPATH=$PWD python benchmarks/bounded_commands.py [--held 10000] [--finished 10000] [--system slurm]

Prints, per scenario, the wall time, the commands sent by kind, the longest command (bytes of
shell text, as the transport measured it) and the longest poll and fetch commands. The held
jobs are cancelled and every directory removed afterwards. The same code as
``tests/remote/test_bounded_commands.py`` (which runs 3,100 held and 2,000 finished jobs).

Slurm's ``MaxJobCount`` (20,000 on the test infrastructure, shared by everyone using it) caps
the held scenario: it refuses to start when the queue has no room for ``--held`` more jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.remote.test_bounded_commands import held_jobs_in_flight, reattach  # noqa: E402


def _slurm_room() -> int | None:
    """Jobs Slurm can still take (MaxJobCount minus the jobs it holds now), or None if unknown."""
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    limit = next((int(line.split("=")[1]) for line in config.splitlines() if line.startswith("MaxJobCount")), None)
    return None if limit is None else limit - len(queued.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="slurm")
    parser.add_argument("--held", type=int, default=10_000, help="held jobs in flight (0: skip)")
    parser.add_argument("--finished", type=int, default=10_000, help="finished jobs to re-attach to (0: skip)")
    args = parser.parse_args()
    report: dict[str, object] = {"command": " ".join(["python", *sys.argv])}
    if args.held:
        room = _slurm_room() if args.system.startswith("slurm") else None
        if room is not None and room < args.held + 50:
            report["held"] = f"skipped: Slurm has room for {room} more jobs (MaxJobCount), not {args.held}"
        else:
            start = time.monotonic()
            run = anyio.run(held_jobs_in_flight, args.system, args.held, uuid.uuid4().hex[:6])
            report["held"] = {"jobs": args.held, "seconds": round(time.monotonic() - start, 1), **run}
    if args.finished:
        with tempfile.TemporaryDirectory() as stage:
            start = time.monotonic()
            values, system = anyio.run(reattach, args.system, args.finished, Path(stage))
            assert values == [i + 1 for i in range(args.finished)]
            stats = system.transport.stats
            report["finished"] = {
                "jobs": args.finished, "seconds": round(time.monotonic() - start, 1),
                "commands": dict(stats.by_kind()), "longest_command": stats.longest_command(),
                "longest_poll": max((r.command_bytes for r in stats.records if r.kind == "poll"), default=0),
                "longest_fetch": max((r.command_bytes for r in stats.records if r.kind == "fetch"), default=0),
                "fetch_bytes_received": sum(r.bytes_received for r in stats.records if r.kind == "fetch")}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("WFL_ASYNC_PROGRESS", "0")
    main()
