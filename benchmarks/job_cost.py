"""What the driver costs per job with one scheduler job per chunk (issue 16's N=1,000 target: <= 1 ms CPU per job).

On the loopback sshd + Slurm of the test infrastructure (``slurm_ssh``)::

    source /tmp/wfl_async_testinfra/env.sh        # or a checkout's env.sh (scripts/testinfra/checkout_env.sh)
    python benchmarks/job_cost.py --n 1000 --json job_cost.json
    python benchmarks/job_cost.py --n 1000 --submit array --json job_cost.json   # the jobs as arrays
    python benchmarks/job_cost.py --n 1000 --profile job_cost   # also job_cost.1.pstats, job_cost.2.pstats (cProfile)

In a fresh project: one autoparallelized call of a trivial operation over N one-atom
configurations, one configuration per chunk and one job per chunk (no packing), then the same
call again with its output deleted (it re-attaches and reads the results: it must submit
nothing; ``WFL_EXPYRE_NO_MARK_PROCESSED`` is set, as a rerun needs its jobs not marked
processed). Each run's figure is the driver's process CPU (all threads) per job (the inputs are made
before the timed span, as a script reads them), with the wall
time, submit commands, remote commands and polls (and their ratio), the commands by kind and the
kB each kind brought back, the driver CPU of one trivial remote command (measured after the run:
the transport's fixed cost, paid once per poll whatever the number of jobs), and the CPU per job
less the commands' own; ``--mode jobs`` also runs N plain
:class:`~wfl_async.job.RemoteJob` s (``operator.add``, :func:`wfl_async.bench.bench_system`). With
``--profile PREFIX`` each run of the call is under cProfile, timed by process CPU, written to
``PREFIX.<run>.pstats`` (slower: compare CPU figures of runs without it).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from ase import Atoms

from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize
from wfl_async.bench import bench_system, fresh_root, merged_raw_config, save_report
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.session import session_scope


def _say(message: str) -> None:
    print(f"[benchmark job_cost] {message}", file=sys.stderr, flush=True)


def tag(atoms_list: list[Atoms]) -> list[Atoms]:
    """The trivial operation: every configuration back with one info key set (sent by value)."""
    for atoms in atoms_list:
        atoms.info["seen"] = True
    return atoms_list


def _configs(n: int) -> list[Atoms]:
    return [Atoms("H", positions=[[0.0, 0.0, float(i)]], info={"i": i}) for i in range(n)]


async def _chunks_run(system: str, n: int, output: Path, check_interval: float,
                      profile: cProfile.Profile | None, submit: str | None = None) -> dict[str, Any]:
    """One autoparallelized call of :func:`tag` over ``n`` configurations, one job each, and its figures."""
    info = RemoteInfo(sys_name=system, job_name="job_cost", resources={"num_nodes": 1, "max_time": "30m"},
                      num_inputs_per_queued_job=1, check_interval=check_interval, timeout=3600, submit=submit)
    inputs = ConfigSet(_configs(n))  # the script's inputs: made before the call, as a script reads them (driver_cost.py too)
    async with session_scope() as session:
        transport = session.system(system).transport.stats
        commands, records = transport.commands_run, len(transport.records)
        cpu, wall = time.process_time(), time.monotonic()
        if profile is not None:
            profile.enable()
        result = await autoparallelize.aio(tag, inputs, OutputSpec(output),
                                           autopara_info=AutoparaInfo(remote_info=info,
                                                                      num_inputs_per_python_subprocess=1))
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        assert result is not None
        got = [a.info["i"] for a in result if a.info.get("seen")]
        system_stats = session.system(system).stats
        commands = transport.commands_run - commands
        ran = transport.records[records:]
        per_command = await _command_cpu(session, system)
        return {"jobs": n, "ok": got == list(range(n)), "wall (s)": round(wall, 2),
                "driver CPU (ms/job)": round(cpu / n * 1e3, 3), "submit commands": system_stats["submit_commands"],
                "remote commands": commands, "polls": system_stats["poll_commands"],
                "remote commands per poll": round(commands / max(1, system_stats["poll_commands"]), 2),
                "CPU per trivial remote command (ms)": round(per_command * 1e3, 3),
                "driver CPU less the commands' own (ms/job)": round((cpu - commands * per_command) / n * 1e3, 3),
                "commands by kind": dict(Counter(r.kind for r in ran)),
                "kB received by kind": {kind: round(sum(r.bytes_received for r in ran if r.kind == kind) / 1e3, 1)
                                        for kind in sorted({r.kind for r in ran})}}


async def _command_cpu(session: Any, system: str, repeat: int = 20) -> float:
    """Driver CPU (s) of one trivial remote command on ``system`` (the transport's fixed cost per
    command, which a run pays once per poll whatever the number of jobs)."""
    transport = session.system(system).transport
    # retry=True as a poll's (a command not safe to repeat first checks an idle ssh session with a no-op)
    await transport.run("true", retry=True)
    cpu = time.process_time()
    for _ in range(repeat):
        await transport.run("true", retry=True)
    return (time.process_time() - cpu) / repeat


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    if "chunks" in args.mode:
        with fresh_root("wfl_async_bench_job_cost_", merged_raw_config()) as root:
            output = root / "out.xyz"
            for index, mode in enumerate(("one job per chunk", "rerun, output deleted"), start=1):
                _say(f"{args.system}: {mode}, {args.n} chunks")
                if output.exists():
                    output.unlink()
                profile = cProfile.Profile(time.process_time) if args.profile else None
                figures = await _chunks_run(args.system, args.n, output, args.check_interval, profile, args.submit)
                rows.append({"mode": mode, "submit": args.submit or "the system's", **figures})
                if profile is not None:
                    profile.dump_stats(f"{args.profile}.{index}.pstats")
                    _say(f"profile: python -m pstats {args.profile}.{index}.pstats")
                _say(json.dumps(rows[-1]))
    if "jobs" in args.mode:
        with fresh_root("wfl_async_bench_job_cost_jobs_", merged_raw_config()):
            _say(f"{args.system}: {args.n} plain RemoteJobs")
            async with session_scope() as session:
                cpu = time.process_time()
                bench = await bench_system(session, args.system, args.n, check_interval=args.check_interval,
                                           resources={"num_nodes": 1, "max_time": "30m"}, job_timeout=3600.0)
                cpu = time.process_time() - cpu
            r = bench.result
            rows.append({"mode": "plain RemoteJobs", "jobs": args.n, "ok": r.ok == args.n,
                         "wall (s)": round(r.all_results_s or 0, 2), "driver CPU (ms/job)": round(cpu / args.n * 1e3, 3),
                         "submit commands": r.submit_commands, "remote commands": r.remote_commands})
            _say(json.dumps(rows[-1]))
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(prog="job_cost.py", description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="slurm_ssh")
    parser.add_argument("--n", type=int, default=1000, help="chunks, one job each (default 1000)")
    parser.add_argument("--submit", choices=("loop", "array"),
                        help="how the chunks' jobs are submitted (RemoteInfo submit; default: the system's, a loop)")
    parser.add_argument("--mode", action="append", choices=("chunks", "jobs"),
                        help="autoparallelized chunks (default) and/or plain RemoteJobs; repeat for both")
    parser.add_argument("--check-interval", type=float, default=0.5)
    parser.add_argument("--profile", help="write a cProfile of each run of the call to PROFILE.<run>.pstats")
    parser.add_argument("--json", default="job_cost.json", help="where to write every figure")
    args = parser.parse_args()
    args.mode = args.mode or ["chunks"]
    os.environ["WFL_EXPYRE_NO_MARK_PROCESSED"] = "1"  # the rerun re-attaches to the first run's jobs
    report = anyio.run(run, args)
    save_report(report, "job_cost.py", args.json)
    print(report["command"])
    for row in report["rows"]:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
