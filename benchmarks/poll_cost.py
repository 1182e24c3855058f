"""The driver CPU of one poll that lists the queue, with many jobs watched and nothing changed (issue 16).

No daemon: the poll loop of one Slurm system is driven against a scripted transport that answers
every poll with the same listing (``--watched`` jobs of ours, all pending, and ``--others`` jobs of
the user's other work), no marker and no event line, as a long run's polls mostly are::

    python benchmarks/poll_cost.py --watched 1000 --others 200 --json poll_cost.json

Prints the driver CPU (process time) per poll, the poll loop's own work only: parsing the answer,
the listing and looking at the jobs (the remote command's own cost is benchmarks/transports.py's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from subprocess import CompletedProcess

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wfl_async.config.system_config import SystemConfig  # noqa: E402
from wfl_async.scheduler import get_scheduler  # noqa: E402
from wfl_async.system.commands import EVENTS_END, QUEUE_END, ROOT_OK  # noqa: E402
from wfl_async.system.machine import Machine  # noqa: E402
from wfl_async.system.poll_loop import PollLoop, PollRecord  # noqa: E402
from wfl_async.system.recorder import NO_RECORDER  # noqa: E402
from wfl_async.system.requests import Watch  # noqa: E402
from wfl_async.system.window import QueueWindow  # noqa: E402
from wfl_async.transport.base import CommandKind, LineCallback, Transport  # noqa: E402


class _Answering(Transport):
    """Answers every command with the same stdout (the remote root first, for the probe)."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer.encode()

    @property
    def where(self) -> str:
        return "scripted"

    async def _run(self, command: str, stdin: bytes | None, on_line: LineCallback | None, retry: bool,
                   kind: CommandKind) -> CompletedProcess[bytes]:
        await anyio.lowlevel.checkpoint()
        return CompletedProcess(command, 0, b"/remote/run\n" if kind == "probe" else self.answer, b"")


async def poll_cpu(watched: int, others: int, polls: int) -> float:
    """Driver CPU (s) of one listing poll, the mean over ``polls`` after three to settle."""
    queue = {str(1000 + i): "PENDING" for i in range(watched)}
    queue.update({str(900000 + i): "RUNNING" for i in range(others)})
    listing = "".join(f"{job_id}|{state}|None\n" for job_id, state in queue.items())
    answer = f"{listing}{QUEUE_END} 0\n{ROOT_OK}\n@@wfl_async_events_size@@ 0\n\n{EVENTS_END}\n"
    config = SystemConfig(name="hpc", host="login.hpc", scheduler="slurm", scheduler_rate=None,
                          partitions={"standard": {"num_cores": 4, "max_time": 3600}})
    machine = Machine(config, _Answering(answer), get_scheduler("slurm"), "bench")
    loop = PollLoop(machine, QueueWindow(None), NO_RECORDER)
    for i in range(watched):
        loop._send.send_nowait(Watch(job_dir=f"job{i}", remote_id=str(1000 + i), fetch=[], local_root=Path("/tmp"),
                                     check_interval=0.5))

    async def one() -> None:
        loop._listed_at = -1e9  # every poll lists the queue
        loop._take_new()
        loop.interval()
        await loop._poll_once(PollRecord(started=time.time(), interval=loop.interval()))

    for _ in range(3):
        await one()
    cpu = time.process_time()
    for _ in range(polls):
        await one()
    return (time.process_time() - cpu) / polls


def main() -> None:
    parser = argparse.ArgumentParser(prog="poll_cost.py", description=__doc__.splitlines()[0])
    parser.add_argument("--watched", type=int, action="append", help="jobs watched (repeat; default 100, 1000, 10000)")
    parser.add_argument("--others", type=int, default=200, help="other jobs of the user in the listing")
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--json", default="poll_cost.json")
    args = parser.parse_args()
    rows = [{"watched": n, "others": args.others,
             "driver CPU per listing poll (ms)": round(anyio.run(poll_cpu, n, args.others, args.polls) * 1e3, 3)}
            for n in args.watched or [100, 1000, 10000]]
    with open(args.json, "w") as handle:
        json.dump({"command": " ".join(["python", "benchmarks/poll_cost.py", *sys.argv[1:]]), "rows": rows}, handle,
                  indent=1)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
