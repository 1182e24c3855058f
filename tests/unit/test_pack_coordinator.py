"""The packing coordinator's loop driven by a scripted transport (no daemon): a survey only reads;
the served loop starts workers for queued chunks and puts a dead worker's chunks back.

The same behaviours run against the real schedulers in tests/remote/test_packing.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import CompletedProcess

import anyio

from tests.helpers.scripted import ROOT, ListRecorder, ScriptedTransport, Sent, slurm_config
from wfl_async.jobs.pack_option import PackSetting
from wfl_async.jobs.states import QueueState, Verdict, VerdictKind
from wfl_async.pack.coordinator import PackCoordinator, WorkerSpec
from wfl_async.pack.listings import PackListings
from wfl_async.pack.queue import chunk_remote_id
from wfl_async.scheduler import get_scheduler
from wfl_async.system.machine import Machine
from wfl_async.system.requests import SubmitRequest
from wfl_async.system.window import QueueWindow
from wfl_async.transport.base import CommandKind, LineCallback


def spec(tmp_path: Path, workers: int = 2) -> WorkerSpec:
    return WorkerSpec(job_name="calc", partition="standard",
                      node_dict={"num_nodes": 1, "num_cores": 1, "num_cores_per_node": 1}, max_time=60,
                      header_extra=(), body=("true",), setting=PackSetting(workers=workers), local_root=tmp_path)


def listing(pid: str, queued: list[str], taken: dict[str, str], workers: dict[str, str]) -> str:
    """The packs' part of a survey's output (:func:`wfl_async.pack.queue.listing_command`'s lines)."""
    lines = [f"P {pid}", f"C {len(queued)} 0", *(f"T {d}@{w}" for d, w in taken.items()),
             *(f"W {w} - 0 Submitted batch job {job_id}" for w, job_id in workers.items())]
    return "\n".join(lines) + "\n"


class Workers:
    """The submit loop as the coordinator sees it: each worker job gets the next id."""

    def __init__(self) -> None:
        self.submitted: list[SubmitRequest] = []

    async def submit(self, request: SubmitRequest) -> str:
        self.submitted.append(request)
        return str(900 + len(self.submitted))


@asynccontextmanager
async def coordinator(transport: ScriptedTransport, workers: Workers, *, serve: bool = True,
                      recorder: ListRecorder | None = None) -> AsyncIterator[tuple[PackCoordinator, PackListings]]:
    machine = Machine(slurm_config(died_grace_seconds=0.0), transport, get_scheduler("slurm"), "project")
    listings = PackListings()
    packing = PackCoordinator(machine, QueueWindow(None), recorder or ListRecorder(), workers.submit, listings)
    async with anyio.create_task_group() as tasks:
        if serve:
            await tasks.start(packing.serve)
        with anyio.fail_after(10):
            yield packing, listings
        tasks.cancel_scope.cancel()


@asynccontextmanager
async def worker_77_running_c1(tmp_path: Path, transport: ScriptedTransport, workers: Workers,
                               ) -> AsyncIterator[tuple[PackCoordinator, PackListings, str]]:
    """A served coordinator whose pack's one worker (job 77) is listed running chunk c1; the listing's text."""
    worker_spec = spec(tmp_path, workers=1)
    async with coordinator(transport, workers) as (packing, listings):
        packing.expect(worker_spec, ROOT)
        running = listing(worker_spec.pack_id, [], {"c1": "w1"}, {"w1": "77"})
        listings.survey_states(ROOT, running, {"77": QueueState.RUNNING})
        await anyio.sleep(0.05)
        yield packing, listings, running


async def test_a_survey_only_reads_and_the_served_loop_starts_workers_for_queued_chunks(tmp_path: Path) -> None:
    transport, workers = ScriptedTransport(), Workers()
    worker_spec = spec(tmp_path, workers=2)
    pid = worker_spec.pack_id
    async with coordinator(transport, workers, serve=False) as (packing, listings):
        packing.expect(worker_spec, ROOT)
        states = listings.survey_states(ROOT, listing(pid, ["c1", "c2", "c3"], {}, {}), {"5": QueueState.RUNNING})
        await anyio.sleep(0.1)
        assert states is not None and dict(states) == {"5": QueueState.RUNNING}  # nothing listed per queued chunk
        assert {c: states.get(chunk_remote_id(pid, c)) for c in ("c1", "c2", "c3")} == dict.fromkeys(
            ("c1", "c2", "c3"), QueueState.QUEUED)  # each looked up
        assert not workers.submitted and not transport.sent  # a query starts nothing
        assert packing.counts() == (0, 0, 0)
    async with coordinator(transport, workers) as (packing, listings):
        packing.expect(worker_spec, ROOT)
        listings.survey_states(ROOT, listing(pid, ["c1", "c2", "c3"], {}, {}), {})
        while len(workers.submitted) < 2:
            await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        assert len(workers.submitted) == 2  # the target, not one per chunk
        assert packing.counts() == (3, 0, 2) and packing.stats["workers_submitted"] == 2
        assert all("/workers/w" in r.job_dir for r in workers.submitted)


async def test_a_worker_gone_from_the_queue_has_its_chunk_put_back_once(tmp_path: Path) -> None:
    # its accounting: cancelled, not killed at a limit (its chunk is put back, not escalated)
    transport = ScriptedTransport(submit=lambda sent: "retry\n", poll=lambda sent: "77|CANCELLED by 0|0:15|00:01:00|\n")
    workers = Workers()
    async with worker_77_running_c1(tmp_path, transport, workers) as (packing, listings, running):
        assert not transport.sent and not workers.submitted  # alive, running the only chunk
        listings.survey_states(ROOT, running, {})  # gone from the queue: missing; its accounting is asked
        while not transport.sent:
            await anyio.sleep(0.01)
        await anyio.sleep(0.05)
        assert transport.kinds() == ["poll"] and packing.stats["chunks_put_back"] == 0
        listings.survey_states(ROOT, running, {})  # ended, as its accounting says: dead
        while len(transport.sent) < 2:
            await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        assert transport.kinds() == ["poll", "submit"] and packing.stats["chunks_put_back"] == 1
        assert "sacct" in transport.sent[0].command and "77" in transport.sent[0].command
        assert len(workers.submitted) == 1  # a new worker for the chunk put back


async def test_a_chunk_killed_with_its_worker_at_its_time_limit_leaves_the_pack_with_the_cause(tmp_path: Path) -> None:
    """Put back, it would be killed again by a worker like the one that died: it leaves its pack with
    the worker's cause, which the poll reads as the chunk's (its job escalates it)."""
    transport, workers = ScriptedTransport(submit=lambda sent: "gone\n"), Workers()  # what the command prints
    pid = spec(tmp_path, workers=1).pack_id
    async with worker_77_running_c1(tmp_path, transport, workers) as (packing, listings, running):
        listings.survey_states(ROOT, running, {"77": QueueState.TIMEOUT})  # Slurm lists it ended: dead at once
        while not transport.sent:
            await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        assert transport.kinds() == ["submit"]  # the listing said why: no accounting asked
        assert "/gone/c1" in transport.sent[0].command and "/retry/c1" not in transport.sent[0].command
        assert packing.stats["chunks_put_back"] == 0 and packing.stats["chunks_killed_at_limit"] == 1
        ended = listings.accounted(chunk_remote_id(pid, "c1"))
        assert ended is not None and ended.state is QueueState.TIMEOUT and ended.ending is not None
        assert "killed at its time limit" in ended.detail() and "worker job 77" in ended.detail()


async def test_gone_entries_of_chunks_recorded_as_ended_are_pruned_and_the_others_kept(tmp_path: Path) -> None:
    # issue 16: every survey lists the gone entries, so each is removed once its chunk's end is recorded
    transport, workers = ScriptedTransport(other=lambda sent: ""), Workers()
    worker_spec = spec(tmp_path, workers=1)
    pid = worker_spec.pack_id
    recorder = ListRecorder()
    recorder.progress.append(("c1", Verdict(VerdictKind.DIED, message="left the queue unrun")))
    async with coordinator(transport, workers, recorder=recorder) as (packing, listings):
        packing.expect(worker_spec, ROOT)
        listings.survey_states(ROOT, f"P {pid}\nC 2 2\nG c1\nG c2\n", {})
        while not packing.stats["gone_pruned"]:
            await anyio.sleep(0.01)
        prunes = [s.command for s in transport.sent if s.kind == "other"]
        assert len(prunes) == 1 and " c1" in prunes[0] and "c2" not in prunes[0]  # c2 may still be watched


class _HeldUploads(ScriptedTransport):
    """Enqueue commands (kind ``submit``) wait until the test lets them go; counts how many run at once."""

    def __init__(self) -> None:
        super().__init__(submit=self._answer)
        self.release = anyio.Event()
        self.running = self.most = 0

    def _answer(self, sent: Sent) -> str:
        return "".join(f"N {d}\n" for d in sent.job_dirs)

    async def _run(self, command: str, stdin: bytes | None, on_line: LineCallback | None, retry: bool,
                   kind: CommandKind) -> CompletedProcess[bytes]:
        if kind != "submit":
            return await super()._run(command, stdin, on_line, retry, kind)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
            return await super()._run(command, stdin, on_line, retry, kind)
        finally:
            self.running -= 1


async def test_at_most_two_enqueue_commands_run_at_once_and_the_chunks_waiting_go_in_fuller_batches(
        tmp_path: Path) -> None:
    # issue 16: dozens of enqueue commands queued for the transport's channels ahead of every fetch
    transport, workers = _HeldUploads(), Workers()
    worker_spec = spec(tmp_path, workers=1)
    requests = [SubmitRequest(job_dir=f"c{i}", job_name=f"c{i}", partition="standard", node_dict={}, max_time=60,
                              header_extra=[], body=[], upload=[], local_root=tmp_path,
                              contents={f"c{i}/task": b"x"}) for i in range(700)]
    async with coordinator(transport, workers) as (packing, _), anyio.create_task_group() as tasks:
        for request in requests:
            tasks.start_soon(packing.submit, request, worker_spec)
        while transport.running < 2:
            await anyio.sleep(0.01)
        await anyio.sleep(0.3)  # more batches would have started by now
        most = transport.most
        transport.release.set()  # (before asserting: the enqueue commands are shielded)
        assert most == 2
        with anyio.fail_after(5):
            while not all(r.remote_id for r in requests):
                await anyio.sleep(0.01)
        tasks.cancel_scope.cancel()
    sizes = [len(s.job_dirs) for s in transport.sent if s.kind == "submit"]
    assert transport.most == 2 and sum(sizes) == 700 and max(sizes) == 300, sizes
