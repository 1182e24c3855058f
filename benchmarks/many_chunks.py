"""Many short chunks: one job per chunk, the plain-sbatch floor, arrays, and packing into worker jobs.

The acceptance run (loopback sshd + Slurm of the test infrastructure)::

    source /tmp/wfl_async_testinfra/env.sh
    python benchmarks/many_chunks.py            # 2,000 trivial chunks; EMT 2,000 configs in 200 chunks

``--n 500`` runs fewer trivial chunks, ``--no-emt`` skips the EMT workload. What the figures
mean: ``docs/packing.md``. The harness is :mod:`wfl_async_bench._many_chunks`.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio
from wfl_async_bench._many_chunks import ManyChunksOptions, run_many_chunks

from wfl_async.bench import save_report


def _table(rows: list[dict[str, Any]]) -> str:
    columns = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in ("pack", "result_lag")]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, tuple | list):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(prog="many_chunks.py", description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="slurm_ssh")
    parser.add_argument("--n", type=int, default=2000, help="trivial chunks (default 2000)")
    parser.add_argument("--workers", type=int, default=8, help="worker jobs when packed (default 8)")
    parser.add_argument("--check-interval", type=float, default=0.5)
    parser.add_argument("--no-arrays", action="store_true", help="skip the submit=\"array\" mode")
    parser.add_argument("--no-emt", action="store_true", help="skip the EMT workload")
    parser.add_argument("--emt-configs", type=int, default=2000)
    parser.add_argument("--emt-per-chunk", type=int, default=10)
    parser.add_argument("--json", default="many_chunks.json", help="where to write every figure")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    args = parser.parse_args()
    options = ManyChunksOptions(system=args.system, chunks=args.n, workers=args.workers,
                                check_interval=args.check_interval, arrays=not args.no_arrays, emt=not args.no_emt,
                                emt_configs=args.emt_configs, emt_per_chunk=args.emt_per_chunk, keep=args.keep)
    report = anyio.run(run_many_chunks, options)
    save_report(report, "many_chunks.py", args.json)
    print(f"\n{report['command']}\n")
    print(_table(report["rows"]))
    if report["emt_rows"]:
        print()
        print(_table(report["emt_rows"]))
    print()
    for name, value in [*report["ratios"].items(), *report["targets"].items()]:
        print(f"{name}: {_cell(value)}")


if __name__ == "__main__":
    main()
