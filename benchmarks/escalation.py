"""Issue 17's escalation workload: configurations that need more than their chunk's time limit.

    source /tmp/wfl_async_testinfra/checkouts/NAME/env.sh   # or /tmp/wfl_async_testinfra/env.sh
    PYTHONPATH=$PWD python benchmarks/escalation.py [--system sge] [--configs 10] [--limit 10] [--pack 0] [--json out.json]

``--configs`` configurations, one per chunk, each sleeping twice ``--limit`` s under a chunk time
limit of ``--limit`` s: every chunk is killed at its limit (the scheduler's own kill) and finishes
only through escalation (twice the time, then, with the Python start, twice again). Then the same
call is run again: it must submit nothing (so recompute nothing: a configuration is computed only
by a submitted job). Prints (and writes with ``--json``) per run the end-to-end time, the
escalation decisions logged, the jobs in the database and their last scheduler ids, and what the
rerun submitted (scheduler ids the first run did not have). With ``--pack N`` the chunks are
packed into N worker jobs of that time limit: each chunk is killed with its worker and leaves
the pack, rerun as a job of its own with twice the time (docs/escalation.md). Use a system whose scheduler kills to the second (``sge``, ``local``); Slurm's
one-minute granularity makes it minutes long.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import remote_functions as rf  # noqa: E402
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize  # noqa: E402
from wfl_async.configset import ConfigSet, OutputSpec  # noqa: E402
from wfl_async.session import session_scope  # noqa: E402


class _Decisions(logging.Handler):
    """Counts the escalation decisions the run logs at INFO."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "escalating:" in record.getMessage():
            self.lines.append(record.getMessage())


async def _run(system: str, name: str, configs: int, limit: int, pack_workers: int) -> dict[str, Any]:
    inputs = []
    for i in range(configs):
        atoms = bulk("Cu", "fcc", a=3.6)
        atoms.info.update(i=i, seconds=2 * limit)
        inputs.append(atoms)
    info = AutoparaInfo(num_inputs_per_python_subprocess=1, remote_info=RemoteInfo(
        sys_name=system, job_name=name, num_inputs_per_queued_job=1, check_interval=0.5,
        resources={"num_nodes": 1, "max_time": f"{limit}s"}, env_vars=["WFL_NUM_PYTHON_SUBPROCESSES=1"],
        pack={"workers": pack_workers} if pack_workers else None))
    figures: dict[str, Any] = {}
    for run in ("first", "rerun"):
        decisions = _Decisions()
        logging.getLogger("wfl_async").addHandler(decisions)
        started = time.monotonic()
        try:
            out = await autoparallelize.aio(rf._label_after_sleeping, ConfigSet(inputs), OutputSpec(),
                                            autopara_info=info)
        finally:
            logging.getLogger("wfl_async").removeHandler(decisions)
        async with session_scope() as rt:
            records = await rt.db.select(name=f"{name}_chunk_.*")
        results = list(out) if out is not None else []
        figures[run] = {"seconds": round(time.monotonic() - started, 1), "results": len(results),
                        "all_labelled": all(a.info.get("labelled") for a in results),
                        "escalations_logged": len(decisions.lines), "jobs_in_db": len(records),
                        "last_remote_ids": sorted({r.remote_id for r in records if r.remote_id}),
                        "example": decisions.lines[:1]}
    figures["rerun_submitted"] = sorted(set(figures["rerun"]["last_remote_ids"]) - set(figures["first"]["last_remote_ids"]))
    for run in ("first", "rerun"):
        figures[run]["last_remote_ids"] = len(figures[run]["last_remote_ids"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="sge")
    parser.add_argument("--configs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=10, help="the chunks' time limit (s)")
    parser.add_argument("--pack", type=int, default=0, metavar="WORKERS",
                        help="pack the chunks into this many worker jobs of the chunks' time limit (0: a job each)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("wfl_async").setLevel(logging.INFO)
    os.environ["WFL_EXPYRE_NO_MARK_PROCESSED"] = "1"  # the rerun re-attaches instead of recomputing
    with tempfile.TemporaryDirectory(prefix="wfl_async_escalation_") as scratch:
        os.environ["EXPYRE_ROOT"] = _root_with_config(Path(scratch))
        figures = anyio.run(_run, args.system, f"escbench-{uuid.uuid4().hex[:6]}", args.configs, args.limit,
                            args.pack)
    figures.update(system=args.system, configs=args.configs, limit=args.limit, pack_workers=args.pack,
                   load=os.getloadavg())
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


def _root_with_config(scratch: Path) -> str:
    """A private EXPYRE_ROOT (its own jobs database) with the user's systems."""
    from wfl_async.config.loader import load_config

    merged: dict[str, Any] = {"systems": {}}
    for path in load_config().config_files:
        merged["systems"].update(json.loads(path.read_text()).get("systems", {}))
    (scratch / "config.json").write_text(json.dumps(merged))
    return str(scratch)


if __name__ == "__main__":
    main()
