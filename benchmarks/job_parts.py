"""The driver's CPU for each piece of a one-job chunk's own path, measured alone (issue 16's N=1,000 target).

No job runs and no command is sent (a system of the config is named for its partitions only)::

    source /tmp/wfl_async_testinfra/env.sh        # or a checkout's env.sh (scripts/testinfra/checkout_env.sh)
    python benchmarks/job_parts.py --n 1000 --json job_parts.json

``benchmarks/job_cost.py`` gives the whole per-job figure of a real run; this splits off what can be timed
without a cluster, each piece over N one-atom chunks as ``job_cost.py`` makes them: preparing the chunks
(checks, job key, task pickled), rendering their job scripts, packing their files into a submit command's
stream, storing their results in the output and writing its final file; and two costs of the machinery
around them, a thread hop and a task started and run. Process CPU (all threads) per chunk, the best of
``--repeat`` rounds (the machine is shared: the best is the least disturbed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
from ase import Atoms
from job_cost import _configs  # (run as a script: benchmarks/ is on the path)

from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo
from wfl_async.autoparallelize.chunk import ChunkResult
from wfl_async.autoparallelize.remote import _prepare_chunks, _store
from wfl_async.bench import fresh_root, merged_raw_config, save_report
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.session import session_scope
from wfl_async.system.submit import batch_command
from wfl_async.transport.base import pack


def tag(atoms_list: list[Atoms]) -> list[Atoms]:
    """The trivial operation of ``job_cost.py``, defined here too: a function of ``__main__`` goes by value."""
    for atoms in atoms_list:
        atoms.info["seen"] = True
    return atoms_list


def _best(rounds: int, n: int, piece: Callable[[], Any]) -> float:
    """ms of process CPU per chunk of ``piece()``, the best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        cpu = time.process_time()
        piece()
        best = min(best, time.process_time() - cpu)
    return round(best / n * 1e3, 4)


async def _async_best(rounds: int, n: int, piece: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(rounds):
        cpu = time.process_time()
        await piece()
        best = min(best, time.process_time() - cpu)
    return round(best / n * 1e3, 4)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n, rounds = args.n, args.repeat
    info = RemoteInfo(sys_name=args.system, job_name="job_parts", resources={"num_nodes": 1, "max_time": "30m"},
                      num_inputs_per_queued_job=1, check_interval=0.5)
    autopara = AutoparaInfo(remote_info=info, num_inputs_per_python_subprocess=1)
    autopara.update_defaults({})
    figures: dict[str, Any] = {"chunks": n}
    with fresh_root("wfl_async_bench_job_parts_", merged_raw_config()) as root:
        async with session_scope() as session:
            configs = _configs(n)
            chunks: list[Any] = []

            async def prepare() -> None:
                chunks[:] = await _prepare_chunks(session, tag, ConfigSet(configs), [], {}, autopara, info)

            figures["prepare a chunk (checks, key, task pickled)"] = await _async_best(rounds, n, prepare)
            system = session.system(args.system)
            requests = [c.job.submit_request(system, upload=[], contents={}, reset=False) for c in chunks]
            figures["render its job script"] = _best(rounds, n, lambda: batch_command(
                system.machine.scheduler, system.config, "/remote/root", requests))
            contents = {k: v for c in chunks for k, v in c.job._staged_contents().items()}
            command = batch_command(system.machine.scheduler, system.config, "/remote/root", requests)
            contents.update((path, text.encode()) for path, text in command.scripts.items())
            figures["pack its files into the submit stream"] = _best(rounds, n, lambda: pack(root, [], contents))

            results = [ChunkResult(i, (i,), (None,), ([tag([a.copy()])[0]],)) for i, a in enumerate(configs)]
            with tempfile.TemporaryDirectory() as scratch:
                outputs = [OutputSpec(Path(scratch) / f"out{r}.xyz") for r in range(rounds)]
                store = iter(outputs)
                figures["store its result (4 a batch)"] = _best(rounds, n, lambda: _store_all(next(store), results))
                close = iter(outputs)
                figures["write the output's final file"] = _best(rounds, n, lambda: next(close).close())

            async def hops() -> None:
                for _ in range(n):
                    await anyio.to_thread.run_sync(len, "x")

            async def tasks() -> None:
                async with anyio.create_task_group() as group:
                    for _ in range(n):
                        group.start_soon(anyio.lowlevel.checkpoint)

            figures["one thread hop"] = await _async_best(rounds, n, hops)
            figures["one task started and run"] = await _async_best(rounds, n, tasks)
    return figures


def _store_all(outputs: OutputSpec, results: list[ChunkResult]) -> None:
    for start in range(0, len(results), 4):  # a fetch wakes a few chunks at a time
        _store(outputs, results[start:start + 4])


def main() -> None:
    parser = argparse.ArgumentParser(prog="job_parts.py", description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="slurm_ssh", help="a system of the config (its partitions only)")
    parser.add_argument("--n", type=int, default=1000, help="chunks (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each piece; the best is kept")
    parser.add_argument("--json", default="job_parts.json", help="where to write every figure")
    args = parser.parse_args()
    report = anyio.run(run, args)
    print(save_report(report, "job_parts.py", args.json))
    for name, value in report.items():
        print(f"{name}: {value}" + (" ms per chunk" if isinstance(value, float) else ""), file=sys.stdout)


if __name__ == "__main__":
    main()
