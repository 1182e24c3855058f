"""What a packed worker's claim and a poll's pack survey cost as the queue grows (issue 16), on a local directory.

A worker claims on the cluster's shared filesystem, so the cost is measured where it arises:
a real queue directory, filled by the real enqueue command (bash), claimed by the real
:class:`~wfl_async.pack.claims.Claimer`, surveyed by the real listing command and parser.
Beside each figure, the same on the layout before issue 16 (commit 9d05cfd: a worker listed
the whole ``todo`` directory and shuffled it; the survey named every queued chunk), from the
copies of that code below.

    python benchmarks/claim_cost.py --sizes 2000,10000,100000 --json claim_cost.json

Per queued count N: worker CPU per claim (process time, user + system, of ``--claims``
claims, each followed by the entry's removal as after a chunk), the first claim of a worker
starting late (after the others took most of a slot), the survey's answer size, the
driver's CPU to parse it (and, after, to look up one chunk's state), and the remote shell's
CPU to produce it. Filling the queue dominates the run time (about 0.5 ms of bash per chunk).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wfl_async.jobs.states import QueueState  # noqa: E402
from wfl_async.pack import queue  # noqa: E402
from wfl_async.pack.claims import Claimer  # noqa: E402

PID = "0123456789abcdef"
TAKEN_BY_WORKERS = 8
"""Entries held taken during the survey: one per worker of a typical pack."""


# ---------------------------------------------------------------------- before issue 16 (9d05cfd)
def old_claim(q: Path, worker: str) -> str | None:
    """The claim before issue 16: list ``todo``, shuffle, rename the first that is still there."""
    names = [n for n in os.listdir(q / "todo") if not n.startswith(".")]
    random.shuffle(names)
    for name in names:
        try:
            os.rename(q / "todo" / name, q / "taken" / f"{name}@{worker}")
        except FileNotFoundError:
            continue
        return name
    return None


def old_listing_command(root: str) -> str:
    """The survey's pack part before issue 16: one line per queued and per taken chunk (workers left out)."""
    return (f"( cd {shlex.quote(root)} 2>/dev/null && cd {queue.PACK_ROOT} 2>/dev/null && for p in *; do "
            f'[ -d "$p/todo" ] || continue; echo "P $p"; '
            f'for f in "$p"/todo/*; do [ -e "$f" ] && echo "Q ${{f##*/}}"; done; '
            f'for f in "$p"/taken/*; do [ -e "$f" ] && echo "T ${{f##*/}}"; done; done; '
            f"true ); echo {queue.LISTING_END}")


def old_parse(text: str) -> dict[str, QueueState]:
    """The old parse and state map: a set of queued names, then one state per queued chunk."""
    queued, taken = set(), {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "Q":
            queued.add(rest.strip())
        elif kind == "T":
            job_dir, _, worker = rest.strip().rpartition("@")
            taken[job_dir] = worker
    states = {queue.chunk_remote_id(PID, d): QueueState.QUEUED for d in queued}
    states.update({queue.chunk_remote_id(PID, d): QueueState.RUNNING for d in taken})
    return states


# ---------------------------------------------------------------------- measuring
def cpu_of(action: Callable[[], object], repeat: int) -> float:
    """Seconds of this process's CPU (user + system) per call of ``action``."""
    start = time.process_time()
    for _ in range(repeat):
        action()
    return (time.process_time() - start) / repeat


def shell(root: Path, command: str) -> tuple[str, float]:
    """Run ``command`` in bash in ``root``: its output and its CPU (user + system of the children)."""
    before = os.times()
    text = subprocess.run(["bash", "-c", command], cwd=root, check=True, capture_output=True, text=True).stdout
    after = os.times()
    return text, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def fill(root: Path, n: int, batch: int) -> None:
    """Queue ``n`` chunks with the real enqueue command, ``batch`` names a command."""
    names = [f"calc_chunk_{i}-{i:08x}" for i in range(n)]
    for start in range(0, n, batch):
        shell(root, queue.enqueue_command(PID, names[start:start + batch]))


def after_issue(root: Path, n: int, claims: int, batch: int) -> dict[str, float]:
    fill(root, n, batch)
    q = root / queue.queue_dir(PID)
    worker = Claimer(q, "w0")

    def claim_and_finish() -> None:
        taken = worker.claim()
        assert taken is not None
        worker.done(taken.name)

    per_claim = cpu_of(claim_and_finish, claims)
    late = Claimer(q, "w-late")
    late_first = cpu_of(lambda: late.claim(), 1)
    for i in range(TAKEN_BY_WORKERS - 1):
        Claimer(q, f"w{i + 1}").claim()
    text, shell_cpu = shell(root, queue.listing_command(str(root)))
    parse_cpu = cpu_of(lambda: queue.ChunkStates(queue.parse_listing(text), {}), 20)
    states = queue.ChunkStates(queue.parse_listing(text), {})
    lookup = queue.chunk_remote_id(PID, f"calc_chunk_{n - 1}-{n - 1:08x}")
    assert states.get(lookup) is QueueState.QUEUED and len(states) == TAKEN_BY_WORKERS
    return {"claim_cpu_ms": 1e3 * per_claim, "late_worker_first_claim_ms": 1e3 * late_first,
            "survey_bytes": len(text.encode()), "survey_parse_cpu_ms": 1e3 * parse_cpu,
            "chunk_lookup_us": 1e6 * cpu_of(lambda: states.get(lookup), 1000),
            "survey_shell_cpu_ms": 1e3 * shell_cpu, "queued_listed": queue.parse_listing(text).packs[PID].queued}


def before_issue(root: Path, n: int, claims: int) -> dict[str, float]:
    q = root / queue.queue_dir(PID)
    for sub in ("todo", "taken"):
        (q / sub).mkdir(parents=True)
    for i in range(n):
        (q / "todo" / f"calc_chunk_{i}-{i:08x}").touch()

    def claim_and_finish() -> None:
        name = old_claim(q, "w0")
        assert name is not None
        (q / "taken" / f"{name}@w0").unlink()

    per_claim = cpu_of(claim_and_finish, claims)
    for i in range(TAKEN_BY_WORKERS):
        old_claim(q, f"w{i + 1}")
    text, shell_cpu = shell(root, old_listing_command(str(root)))
    parse_cpu = cpu_of(lambda: old_parse(text), 3)
    return {"claim_cpu_ms": 1e3 * per_claim, "survey_bytes": len(text.encode()),
            "survey_parse_cpu_ms": 1e3 * parse_cpu, "survey_shell_cpu_ms": 1e3 * shell_cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,10000,100000", help="queued counts, comma-separated")
    parser.add_argument("--claims", type=int, default=500, help="claims measured per size (after)")
    parser.add_argument("--old-claims", type=int, default=20, help="claims measured per size (before)")
    parser.add_argument("--batch", type=int, default=queue.NAMES_PER_COMMAND, help="names per enqueue command")
    parser.add_argument("--no-before", action="store_true", help="skip the layout before issue 16")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the queues (default: a temporary directory)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.dir) as new, tempfile.TemporaryDirectory(dir=args.dir) as old:
            started = time.monotonic()
            row: dict[str, object] = {"queued": n, "after": after_issue(Path(new), n, args.claims, args.batch)}
            if not args.no_before:
                row["before"] = before_issue(Path(old), n, args.old_claims)
            row["seconds"] = round(time.monotonic() - started, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| queued | claim CPU before (ms) | claim CPU after (ms) | late worker's first claim (ms) "
          "| survey answer before (bytes) | after (bytes) | driver parse before (ms) | after (ms) "
          "| survey shell CPU before (ms) | after (ms) |\n|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        a, b = row["after"], row.get("before") or {}
        assert isinstance(a, dict) and isinstance(b, dict)

        def f(values: dict[str, float], key: str, digits: int = 3) -> str:
            return f"{values[key]:.{digits}f}" if key in values else "-"

        print(f"| {row['queued']:,} | {f(b, 'claim_cpu_ms')} | {f(a, 'claim_cpu_ms')} | "
              f"{f(a, 'late_worker_first_claim_ms')} | {b.get('survey_bytes', '-'):,} | {a['survey_bytes']:,} | "
              f"{f(b, 'survey_parse_cpu_ms', 2)} | {f(a, 'survey_parse_cpu_ms')} | {f(b, 'survey_shell_cpu_ms', 1)} | "
              f"{f(a, 'survey_shell_cpu_ms', 1)} |")
    if args.json:
        load = os.getloadavg()
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "load_average": load, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
