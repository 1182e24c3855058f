"""What an sshd outage during submission costs: the same jobs with and without a stopped sshd.

Starts its own sshd on a free loopback port (the keys and settings of
``scripts/testinfra/start_sshd.sh``; the shared one on 2222 is never touched), submits
``--jobs`` jobs to ``--system`` (a copy of it reached through that sshd), stops the sshd
(listener and sessions) for ``--outage`` seconds once the submission command is running on
the server, starts it again, and prints the extra wall time against a run without outage::

    source /tmp/wfl_async_testinfra/env.sh
    python benchmarks/ssh_outage.py --outage 30 --check-interval 5

Target: lost time <= outage + 2 poll intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import remote_functions as rf  # noqa: E402
from tests.helpers.processes import cmdline  # noqa: E402
from tests.helpers.sshd import OwnSshd, descendants  # noqa: E402
from wfl_async.jobs.remote_job import RemoteJob  # noqa: E402


def _config(root: Path, source: dict[str, Any], base: str, own: OwnSshd) -> None:
    entry = dict(source["systems"][base], host=own.alias, ssh_config=str(own.ssh_config))
    (root / "config.json").write_text(json.dumps({"systems": {"outage": entry}}))


async def _run(jobs: int, check_interval: float) -> float:
    name = f"outage{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(jobs):
            tg.start_soon(RemoteJob(rf.sleep_then_return, (2, i), sys_name="outage", job_name=f"{name}-{i}",
                                    resources={"num_cores": 1, "max_time": "10m"}, partial_node=True,
                                    check_interval=check_interval).aio)
    return time.monotonic() - started


def _stop_during_submission(own: OwnSshd, outage: float, done: threading.Event) -> None:
    while not done.is_set() and own.listener is not None:
        for pid in descendants(own.listener):
            # the shell running the stage+submit command (its text names the upload's temporary directory)
            if ".wfl_async_upload." in " ".join(cmdline(pid)):
                own.stop()
                print(f"sshd stopped during submission, for {outage:.0f} s", flush=True)
                time.sleep(outage)
                own.start()
                return
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", default="slurm_ssh")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--check-interval", type=float, default=5.0)
    args = parser.parse_args()
    source = json.loads((Path(os.environ["EXPYRE_ROOT"]) / "config.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        own = OwnSshd(Path(tmp) / "sshd")
        own.start()
        try:
            times = {}
            for label in ("without outage", "with outage"):
                root = Path(tmp) / label.replace(" ", "_")
                root.mkdir()
                _config(root, source, args.system, own)
                os.environ["EXPYRE_ROOT"] = str(root)
                done = threading.Event()
                if label == "with outage":
                    threading.Thread(target=_stop_during_submission, args=(own, args.outage, done)).start()
                times[label] = anyio.run(_run, args.jobs, args.check_interval)
                done.set()
        finally:
            own.stop()
    lost = times["with outage"] - times["without outage"]
    bound = args.outage + 2 * args.check_interval
    print(f"{args.jobs} jobs on {args.system} via own sshd: {times['without outage']:.1f} s without outage, "
          f"{times['with outage']:.1f} s with a {args.outage:.0f} s outage during submission: lost {lost:.1f} s "
          f"(target <= outage + 2 poll intervals = {bound:.1f} s: {'met' if lost <= bound else 'NOT met'})")


if __name__ == "__main__":
    main()
