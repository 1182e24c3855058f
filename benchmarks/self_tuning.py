"""Self-tuning on a heavy-tailed workload: fixed chunking as a user would guess it against ``pack="auto"``.

N configurations whose run times follow a log-normal distribution (median 0.5 s, 1 % above 20 s,
capped at ``--longest`` s so that one configuration always fits a worker), a deterministic
function of the configuration's index (reruns and both modes see the same times). Each
configuration sleeps its time, so the figures measure scheduling, not this machine's load.
Worker walltime is capped at 2 minutes in both modes. On the loopback sshd + Slurm of the test
infrastructure::

    source /tmp/wfl_async_testinfra/env.sh
    python benchmarks/self_tuning.py --n 2000 --json self_tuning.json

Per mode: end to end; workers' core-seconds (from Slurm's own job completion log, every worker
job's start to end) against the useful core-seconds (the sum of the configurations' times); tasks
killed at the walltime (the driver's count of taken chunks it put back or escalated after their
worker died; task runs, ``running`` lines in the workers' logs, beyond one per chunk are a
cross-check that misses a chunk escalated into new chunks or a job of its own); idle worker time at
the end (each worker's end after its last task's end); the mean of workers running (workers'
core-seconds over end to end: below ``--workers`` when the shared Slurm kept them queued).
Targets for ``auto``: 0 killed, core-seconds
within 1.25x of the useful work, end to end within 1.3x of useful work / cores (``--workers``
cores: one per worker). What the figures mean: docs/benchmark.md, docs/self-tuning.md.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import shlex
import statistics
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.bench import fresh_root, merged_raw_config, save_report
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.pack.queue import PACK_ROOT
from wfl_async.session import session_scope

JOBCOMP = Path("/tmp/wfl_async_testinfra/slurm/jobcomp.txt")
"""Slurm's own record of every finished job (``JobCompType=jobcomp/filetxt`` of the test Slurm)."""
MEDIAN, TAIL_SECONDS, TAIL_FRACTION = 0.5, 20.0, 0.01
SIGMA = math.log(TAIL_SECONDS / MEDIAN) / statistics.NormalDist().inv_cdf(1 - TAIL_FRACTION)
"""Log-normal shape: P(time > 20 s) = 1 % with a median of 0.5 s (sigma about 1.59)."""


def seconds_of(index: int, longest: float) -> float:
    """Configuration ``index``'s run time: a log-normal draw fixed by the index (sha256 of it)."""
    digest = hashlib.sha256(f"self_tuning {index}".encode()).digest()
    u = (int.from_bytes(digest[:8], "big") + 0.5) / 2.0 ** 64
    return min(longest, MEDIAN * math.exp(SIGMA * statistics.NormalDist().inv_cdf(u)))


def sleep_its_time(atoms_list: list[Any]) -> list[Any]:
    """The operation: each configuration sleeps its time (sent by value: it lives in this script)."""
    import time as _time

    out = []
    for atoms in atoms_list:
        _time.sleep(float(atoms.info["seconds"]))
        atoms = atoms.copy()
        atoms.info["done"] = True
        out.append(atoms)
    return out


def configurations(n: int, longest: float) -> list[Any]:
    from ase import Atoms

    configs = []
    for i in range(n):
        atoms = Atoms("H", positions=[[0.0, 0.0, 0.0]])
        atoms.info["i"] = i
        atoms.info["seconds"] = seconds_of(i, longest)
        configs.append(atoms)
    return configs


def _jobcomp_size() -> int:
    return JOBCOMP.stat().st_size if JOBCOMP.exists() else 0


def _jobcomp_lines(offset: int) -> list[dict[str, str]]:
    if not JOBCOMP.exists():
        return []
    with JOBCOMP.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    return [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in text.splitlines()]


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def run_mode(mode: str, args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    """One call of N configurations in ``mode`` (``fixed`` or ``auto``) in a fresh project; its figures."""
    configs = configurations(args.n, args.longest)
    useful = sum(a.info["seconds"] for a in configs)
    pack: Any = {"workers": args.workers} if mode == "fixed" else {"max_workers": args.workers}
    name = f"selftune-{mode}-{uuid.uuid4().hex[:6]}"
    info = RemoteInfo(sys_name=args.system, job_name=name, resources={"num_cores": 1, "max_time": args.walltime},
                      partial_node=True, num_inputs_per_queued_job=args.per_chunk, check_interval=args.check_interval,
                      pack=pack)
    offset = _jobcomp_size()
    with fresh_root(f"wfl_async_bench_selftune_{mode}_", raw, keep=args.keep) as root:
        print(f"{args.system}: {mode}, {args.n} configurations, {useful:.0f} s of useful work", flush=True)
        async with session_scope() as session:
            began = time.time()
            result = await autoparallelize.aio(sleep_its_time, ConfigSet(configs), OutputSpec(root / "out.xyz"),
                                               autopara_info=AutoparaInfo(remote_info=info))
            end_to_end = time.time() - began
            ok = result is not None and sorted(a.info["i"] for a in result if a.info.get("done")) == list(range(args.n))
            stats = dict(session.packing(args.system).stats)
            records = [r for r in await session.db.select(system=args.system) if r.name.startswith(name)]
            last_task_end: dict[str, float] = {}
            for r in records:
                if r.worker and r.finished_at:
                    worker = r.worker.rsplit("/", 1)[-1]
                    last_task_end[worker] = max(last_task_end.get(worker, 0.0), r.finished_at)
            target = session.system(args.system)
            remote_root = await target.remote_root()
            # every task run starts with a 'running' line in its worker's log: runs beyond one per chunk were killed
            runs = await target.transport.run(f"cat {shlex.quote(remote_root)}/{PACK_ROOT}/*/workers/*/"
                                              f"_wfl_async_worker.log | grep -c '^running ' || true")
            killed = int(runs.stdout.decode().strip() or 0) - len(records)
    await anyio.sleep(2)  # slurmctld writes a job's completion line as it leaves the queue
    workers = [line for line in _jobcomp_lines(offset)
               if line.get("WorkDir", "").startswith(f"{remote_root}/{PACK_ROOT}/")]
    worker_seconds = sum(_stamp(w["EndTime"]) - _stamp(w["StartTime"]) for w in workers)
    idle_end = sum(max(0.0, _stamp(w["EndTime"]) - last_task_end[w["WorkDir"].rsplit("/", 1)[-1]])
                   for w in workers if w["WorkDir"].rsplit("/", 1)[-1] in last_task_end)
    return {"mode": mode, "configs": args.n, "all results right": ok, "chunks": len(records),
            "end to end (s)": round(end_to_end, 1), "useful (core-s)": round(useful, 1),
            "workers (core-s)": round(worker_seconds, 1),
            "core-s / useful": round(worker_seconds / useful, 3) if useful else None,
            "end to end / (useful / cores)": round(end_to_end / (useful / args.workers), 3),
            # a chunk killed with its worker is put back (rerun in its directory) or, at a limit, escalated
            # (split into new chunks, or a job of its own): the driver counts both
            "tasks killed at walltime": stats["chunks_put_back"] + stats.get("chunks_killed_at_limit", 0),
            "task runs beyond one per chunk": killed, "chunks put back": stats["chunks_put_back"],
            "workers timed out": sum(1 for w in workers if w.get("JobState") == "TIMEOUT"),
            "worker jobs": len(workers), "most workers at once": _most_at_once(workers),
            # below the workers asked for: a shared Slurm kept them queued (other jobs first)
            "mean workers running": round(worker_seconds / end_to_end, 2) if end_to_end else None,
            "idle at end (core-s)": round(idle_end, 1)}


def _most_at_once(workers: list[dict[str, str]]) -> int:
    """The most worker jobs running at one time (a self-tuned replacement may start beside a draining worker)."""
    events = sorted([(_stamp(w["StartTime"]), 1) for w in workers] + [(_stamp(w["EndTime"]), -1) for w in workers])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[str(row.get(c, "-")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "-|-".join("-" * w for w in widths)]
    return "\n".join(lines + [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells])


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    raw = merged_raw_config()
    rows = [await run_mode(mode, args, raw) for mode in args.modes.split(",")]
    auto = next((r for r in rows if r["mode"] == "auto"), None)
    targets = {} if auto is None else {
        "auto: 0 tasks killed": auto["tasks killed at walltime"] == 0,
        "auto: core-s within 1.25x of useful": auto["core-s / useful"] is not None and auto["core-s / useful"] <= 1.25,
        "auto: end to end within 1.3x of useful / cores": auto["end to end / (useful / cores)"] <= 1.3}
    return {"rows": rows, "targets": targets}


def main() -> None:
    parser = argparse.ArgumentParser(prog="self_tuning.py", description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="slurm_ssh")
    parser.add_argument("--n", type=int, default=2000, help="configurations (default 2000)")
    parser.add_argument("--workers", type=int, default=8, help="workers (fixed) and max_workers (auto); cores")
    parser.add_argument("--per-chunk", type=int, default=10, help="configurations per chunk, fixed mode (default 10)")
    parser.add_argument("--walltime", default="2m", help="worker walltime cap, both modes (default 2m)")
    parser.add_argument("--longest", type=float, default=80.0,
                        help="cap on one configuration's time (s), below the walltime (default 80)")
    parser.add_argument("--modes", default="fixed,auto")
    parser.add_argument("--check-interval", type=float, default=0.5)
    parser.add_argument("--json", default="self_tuning.json", help="where to write every figure")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    args = parser.parse_args()
    report = anyio.run(main_async, args)
    save_report(report, "self_tuning.py", args.json)
    print(f"\n{report['command']}\n\n{_table(report['rows'])}\n")
    for target, met in report["targets"].items():
        print(f"{target}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
