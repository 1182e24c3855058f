"""One call over two systems with one made slow mid-run, against each system alone (issue 18).

The acceptance run (loopback sshd + Slurm + SGE of the test infrastructure)::

    source /tmp/wfl_async_testinfra/env.sh
    python benchmarks/multi_system.py            # 400 chunks of 2 s; --n 100 on a loaded machine

Three runs of the same call (``--n`` chunks, one configuration each, each sleeping ``--seconds``),
each in a fresh project: on ``slurm_ssh`` alone, on ``sge_ssh`` alone, then on both
(``sys_name=["slurm_ssh", "sge_ssh"]``) with Slurm made slow ``--slow-after`` s into the run for
``--slow-for`` s: its pending jobs are held (``scontrol hold``) and every job submitted meanwhile
is submitted held (an ``sbatch`` wrapper first on the system's PATH); afterwards whatever is
still held is released. Reported: wall time of each run, chunks moved, and chunks run twice,
counted two ways: each chunk's own execution record (a line its function appends to
``_completions.log`` in its job directory, read back from both systems) and the schedulers'
accounting (Slurm's job completion log, SGE's ``qacct``: chunks that completed more than once).
Target: the run over both within 1.25x of the faster system alone. Figures: docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from ase import Atoms
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import remote_functions as rf  # noqa: E402
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo, autoparallelize  # noqa: E402
from wfl_async.configset import ConfigSet, OutputSpec  # noqa: E402
from wfl_async.errors import SchedulerError  # noqa: E402
from wfl_async.jobs.states import JobStatus, QueueState  # noqa: E402
from wfl_async.session import Session, session_scope  # noqa: E402

SLOWED = "slurm_ssh_slowable"


def cells(n: int) -> list[Atoms]:
    """``n`` small copper cells numbered by ``info["i"]``."""
    out = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.info["i"] = i
        out.append(atoms)
    return out
_WRAPPER = """#!/bin/bash
# submits held while the flag file beside it exists (the benchmark's slow spell)
if [ -e "$(dirname "$0")/slow" ]; then exec /usr/bin/sbatch --hold "$@"; fi
exec /usr/bin/sbatch "$@"
"""


@contextlib.contextmanager
def project(base_config: dict[str, Any], extra: dict[str, Any]) -> Iterator[Path]:
    """A fresh project: its own EXPYRE_ROOT (the user's systems plus ``extra``), cwd and jobs database."""
    saved_cwd, saved_root = os.getcwd(), os.environ.get("EXPYRE_ROOT")
    with tempfile.TemporaryDirectory(prefix="wfl_async_multi_bench_") as tmp:
        root = Path(tmp) / "_expyre"
        root.mkdir()
        config = {"systems": {**base_config["systems"], **extra}}
        (root / "config.json").write_text(json.dumps(config, indent=1))
        os.environ["EXPYRE_ROOT"] = str(root)
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(saved_cwd)
            if saved_root is None:
                os.environ.pop("EXPYRE_ROOT", None)
            else:
                os.environ["EXPYRE_ROOT"] = saved_root


def remote_info(systems: Any, name: str, args: argparse.Namespace) -> RemoteInfo:
    return RemoteInfo(sys_name=systems, job_name=name, resources={"num_cores": 1, "max_time": "10m"},
                      partial_node=True, num_inputs_per_queued_job=1, check_interval=args.check_interval,
                      env_vars=[f"WFL_TEST_SLEEP={args.seconds}"],
                      pack={"workers": args.workers, "idle_seconds": 2} if args.workers else None)


async def executions(session: Session, systems: list[str], name: str) -> Counter[str]:
    """Chunk job dir -> lines in its ``_completions.log``, summed over ``systems``."""
    records = [r for r in await session.db.select() if r.name.startswith(f"{name}_chunk_")]
    counts: Counter[str] = Counter({r.job_dir: 0 for r in records})
    for system_name in systems:
        system = session.system(system_name)
        root = await system.remote_root()
        listing = "\n".join(r.job_dir for r in records).encode() + b"\n"
        answer = await system.transport.run(
            f"cd {shlex.quote(root)} && while read -r d; do echo \"$d $(cat \"$d/_completions.log\" 2>/dev/null "
            f"| wc -l)\"; done", stdin=listing)
        for line in answer.stdout.decode().splitlines():
            if len(line.split()) == 2:
                job_dir, count = line.split()
                counts[job_dir] += int(count)
    return counts


def accounted_twice(name: str) -> dict[str, int]:
    """Chunks of call ``name`` that completed more than once, by each scheduler's own accounting."""
    slurm = subprocess.run(["bash", "-c", "sacct -c -n -P -o JobName,State 2>/dev/null"], capture_output=True,
                           text=True, check=False).stdout.split()
    sge = subprocess.run(["bash", "-c", "qacct -j '*' 2>/dev/null | awk '$1 == \"jobname\" {print $2}'"],
                         capture_output=True, text=True, check=False).stdout.split()
    completed = Counter(line.split("|")[0] for line in slurm if line.endswith("|COMPLETED"))
    completed.update(job.removeprefix("N_") for job in sge)
    return {job: n for job, n in completed.items() if name in job and n > 1}


async def one_run(systems: Any, args: argparse.Namespace, slow: bool) -> dict[str, Any]:
    name = f"multi-bench-{uuid.uuid4().hex[:6]}"
    info = remote_info(systems, name, args)
    listed = systems if isinstance(systems, list) else [systems]
    row: dict[str, Any] = {"systems": "+".join(listed), "slowed": SLOWED if slow else None,
                           "placement": None if len(listed) == 1 else "by preference" if args.fresh_projects
                           else "measured (the runs alone)", "chunks": args.n}
    async with session_scope() as session:
        for system_name in listed:
            await session.serving(system_name)
        flag = await _install_wrapper(session) if slow else None
        started = time.monotonic()
        async with anyio.create_task_group() as tasks:
            if flag is not None:
                tasks.start_soon(_slow_spell, session, name, flag, args)
            result = await autoparallelize.aio(rf._counted_label, ConfigSet(cells(args.n)), OutputSpec(f"{name}.xyz"),
                                               autopara_info=AutoparaInfo(remote_info=info))
            tasks.cancel_scope.cancel()
        assert result is not None
        row["seconds"] = round(time.monotonic() - started, 1)
        row["results_right"] = [a.info["i"] for a in result] == list(range(args.n)) and all(
            a.info["labelled"] for a in result)
        records = await session.db.select(name=f"{name}_chunk_.*")
        row["ran_on"] = dict(Counter(r.system for r in records))
        row["moved"] = sum(1 for r in records if r.moved_from)
        counts = await executions(session, listed, name)
        row["run_twice_by_record"] = sum(1 for n in counts.values() if n > 1)
        row["never_run_by_record"] = sum(1 for n in counts.values() if n == 0)
        if flag is not None:
            await _release_all(session, name, flag)
    row["run_twice_by_accounting"] = len(accounted_twice(name))
    return row


async def _install_wrapper(session: Session) -> str:
    """The ``sbatch`` wrapper, in the directory the slowed system's PATH starts with; its flag file's path."""
    system = session.system(SLOWED)
    bin_dir = system.config.pre_submit_cmds[-1].split("=", 1)[1].split(":", 1)[0]
    await system.transport.run(f"mkdir -p {bin_dir} && cat > {bin_dir}/sbatch && chmod 755 {bin_dir}/sbatch && "
                               f"rm -f {bin_dir}/slow", stdin=_WRAPPER.encode())
    return f"{bin_dir}/slow"


async def _slow_spell(session: Session, name: str, flag: str, args: argparse.Namespace) -> None:
    """``--slow-after`` s in: hold the call's pending Slurm jobs and submit new ones held, for ``--slow-for`` s."""
    system = session.system(SLOWED)
    await anyio.sleep(args.slow_after)
    await system.transport.run(f": > {flag}")
    pending = [r.remote_id for r in await session.db.select(name=f"{name}_chunk_.*", system=SLOWED,
                                                            status=[JobStatus.SUBMITTED.value]) if r.remote_id]
    states = await system.queue_states()
    held = [i for i in pending if states.get(i) is QueueState.QUEUED]  # one started meanwhile cannot be held
    if held:
        with contextlib.suppress(SchedulerError):  # ... nor one that starts now
            await system.control("hold", held)
    print(f"slow spell: {SLOWED} held {len(held)} pending job(s), submits held for {args.slow_for:g} s", flush=True)
    await anyio.sleep(args.slow_for)
    await _release_all(session, name, flag)


async def _release_all(session: Session, name: str, flag: str) -> None:
    system = session.system(SLOWED)
    await system.transport.run(f"rm -f {flag}")
    records = await session.db.select(name=f"{name}_chunk_.*", system=SLOWED, status=[JobStatus.SUBMITTED.value])
    ids = [r.remote_id for r in records if r.remote_id]
    states = await system.queue_states()
    held = [i for i in ids if states.get(i) is QueueState.HELD]
    if held:
        with contextlib.suppress(SchedulerError):
            await system.control("release", held)


def main() -> None:
    parser = argparse.ArgumentParser(prog="multi_system.py", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="chunks (default 400)")
    parser.add_argument("--seconds", type=float, default=2.0, help="each chunk's run time (default 2)")
    parser.add_argument("--slow-after", type=float, default=10.0, help="s into the run the slow spell starts")
    parser.add_argument("--slow-for", type=float, default=60.0, help="how long Slurm stays slow (default 60 s)")
    parser.add_argument("--workers", type=int, default=0, help="pack the chunks into this many workers (0: not)")
    parser.add_argument("--check-interval", type=float, default=1.0)
    parser.add_argument("--fresh-projects", action="store_true",
                        help="each run in a project of its own: the run over both starts with nothing measured "
                             "(default: one project, so the runs alone are the measurements placement starts from)")
    parser.add_argument("--json", default="multi_system.json", help="where to write every figure")
    args = parser.parse_args()
    from wfl_async.config import load_config

    config = load_config()
    base: dict[str, Any] = {"systems": {}}
    for path in config.config_files:
        base["systems"].update(json.loads(path.read_text()).get("systems", {}))
    slowable = dict(base["systems"]["slurm_ssh"])
    bin_dir = f"/tmp/wfl_async_multi_bench_bin_{uuid.uuid4().hex[:6]}"
    slowable["pre_submit_cmds"] = [*slowable.get("pre_submit_cmds", []), f"export PATH={bin_dir}:$PATH"]
    extra = {SLOWED: slowable}
    rows = []
    with contextlib.ExitStack() as stack:
        shared = None if args.fresh_projects else stack.enter_context(project(base, extra))
        # alone, Slurm runs as the slowable copy (unslowed): its record is the one placement reads after
        for systems, slow in (([SLOWED], False), (["sge_ssh"], False), ([SLOWED, "sge_ssh"], True)):
            with project(base, extra) if shared is None else contextlib.nullcontext():
                rows.append(anyio.run(one_run, systems if len(systems) > 1 else systems[0], args, slow))
            print(json.dumps(rows[-1]), flush=True)
    fastest = min(r["seconds"] for r in rows[:2])
    report = {"command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/multi_system.py", *sys.argv[1:]]),
              "load": os.getloadavg(), "rows": rows,
              "both_over_faster_alone": round(rows[2]["seconds"] / fastest, 2), "target": 1.25}
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"\n{report['command']}\n")
    print("systems | slowed | placement | chunks | ran on | seconds | moved | run twice (record / accounting) | "
          "results right")
    print("--|--|--|--|--|--|--|--|--")
    for r in rows:
        print(f"{r['systems']} | {r['slowed'] or '-'} | {r['placement'] or '-'} | {r['chunks']} | {r['ran_on']} | "
              f"{r['seconds']} | {r['moved']} | {r['run_twice_by_record']} / {r['run_twice_by_accounting']} | "
              f"{r['results_right']}")
    print(f"\nover both / faster alone: {report['both_over_faster_alone']} (target {report['target']})")


if __name__ == "__main__":
    main()
