"""The submit loop driven by a scripted transport (no daemon): batching, retries, lost answers, window room.

Each behaviour here is also tested against the real schedulers (tests/remote); these tests
pin the loop's own decisions, each in a fraction of a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests.helpers.scripted import (
    ROOT,
    ListRecorder,
    ScriptedTransport,
    Sent,
    dropped,
    poll_answer,
    refused,
    slurm_config,
    submitted,
)
from wfl_async.errors import SchedulerError
from wfl_async.scheduler import get_scheduler
from wfl_async.scheduler.base import UNRESOLVED, UNRESOLVED_RC
from wfl_async.system import submit_loop
from wfl_async.system.batching import FIRST_BATCH
from wfl_async.system.machine import Machine
from wfl_async.system.requests import SubmitRequest
from wfl_async.system.submit_loop import SubmitLoop
from wfl_async.system.window import QueueWindow


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries go at once (the backoff's length is the scheduler's business, not these tests')."""
    monkeypatch.setattr(submit_loop, "retry_delay", lambda kind, attempts: 0.01)


def request(tmp_path: Path, name: str) -> SubmitRequest:
    (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / name / "task.pkl").write_bytes(b"task")
    return SubmitRequest(job_dir=name, job_name=name, partition="standard",
                         node_dict={"num_nodes": 1, "num_cores": 1, "num_cores_per_node": 1}, max_time=60,
                         header_extra=[], body=["true"], upload=[f"{name}/task.pkl"], local_root=tmp_path)


def answer_each(remote_id: Callable[[str], str]) -> Callable[[Sent], str]:
    """A submit script queueing every job of a batch, with the id ``remote_id(job_dir)``."""
    return lambda sent: "".join(submitted(i, remote_id(d)) for i, d in enumerate(sent.job_dirs))


@asynccontextmanager
async def serving(transport: ScriptedTransport, *, limit: int | None = None, watched: int = 1,
                  ) -> AsyncIterator[tuple[SubmitLoop, QueueWindow, ListRecorder]]:
    machine = Machine(slurm_config(), transport, get_scheduler("slurm"), "project")
    window, recorder = QueueWindow(limit), ListRecorder()
    loop = SubmitLoop(machine, window, recorder, watched=lambda: watched, batch_window=0.01, max_batch_wait=0.2)
    async with anyio.create_task_group() as tasks:
        await tasks.start(loop.run)
        with anyio.fail_after(10):
            yield loop, window, recorder
        tasks.cancel_scope.cancel()


async def submit_all(loop: SubmitLoop, requests: list[SubmitRequest]) -> dict[str, str | BaseException]:
    outcomes: dict[str, str | BaseException] = {}

    async def one(r: SubmitRequest) -> None:
        try:
            outcomes[r.job_dir] = await loop.submit(r)
        except SchedulerError as exc:
            outcomes[r.job_dir] = exc

    async with anyio.create_task_group() as tasks:
        for r in requests:
            tasks.start_soon(one, r)
    return outcomes


def batches(transport: ScriptedTransport) -> list[list[str]]:
    return [s.job_dirs for s in transport.sent if s.kind == "submit"]


async def test_jobs_arriving_together_go_in_one_command_and_each_is_recorded(tmp_path: Path) -> None:
    transport = ScriptedTransport(submit=answer_each(lambda d: f"1{d[-1]}"))
    async with serving(transport) as (loop, window, recorder):
        outcomes = await submit_all(loop, [request(tmp_path, f"job{i}") for i in range(5)])
    assert outcomes == {f"job{i}": f"1{i}" for i in range(5)}
    assert transport.kinds() == ["probe", "submit"] and sorted(batches(transport)[0]) == sorted(outcomes)
    assert recorder.submitted_ids == outcomes and loop.machine.stats["submit_commands"] == 1
    assert loop.pending == 0 and window.used == 5  # queued jobs hold their room until they end


async def test_a_calls_first_batch_is_small_so_its_first_jobs_start_early(tmp_path: Path) -> None:
    transport = ScriptedTransport(submit=answer_each(lambda d: d.removeprefix("job")))
    async with serving(transport, watched=0) as (loop, _, _):
        await submit_all(loop, [request(tmp_path, f"job{i}") for i in range(FIRST_BATCH + 5)])
    assert [len(b) for b in batches(transport)] == [FIRST_BATCH, 5]


async def test_a_transient_complaint_is_retried_and_a_permanent_one_fails_only_its_job(tmp_path: Path) -> None:
    tries: dict[str, int] = {}

    def script(sent: Sent) -> str:
        out = []
        for i, d in enumerate(sent.job_dirs):
            tries[d] = tries.get(d, 0) + 1
            if d == "busy" and tries[d] == 1:
                out.append(refused(i, "sbatch: error: Socket timed out on send/recv operation"))
            elif d == "bad":
                out.append(refused(i, "sbatch: error: invalid partition specified: nowhere"))
            else:
                out.append(submitted(i, str(100 + i)))
        return "".join(out)

    transport = ScriptedTransport(submit=script)
    async with serving(transport, limit=10) as (loop, window, _):
        outcomes = await submit_all(loop, [request(tmp_path, d) for d in ("ok", "busy", "bad")])
        assert window.used == 2  # the refused job gave its room back
    assert isinstance(outcomes["bad"], SchedulerError) and "invalid partition" in str(outcomes["bad"])
    assert isinstance(outcomes["ok"], str) and isinstance(outcomes["busy"], str)
    assert tries == {"ok": 1, "busy": 2, "bad": 1} and loop.machine.stats["submit_retries"] == 1


async def test_a_lost_answer_is_looked_for_in_the_queue_before_any_second_submission(tmp_path: Path) -> None:
    calls = 0

    def script(sent: Sent) -> str | tuple[str, BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first job's record arrives, then the connection drops
            return submitted(sent.job_dirs.index("first"), "100"), dropped()
        if sent.job_dirs == ["second"] and calls == 2:  # its lock holds no answer: unresolved
            return f"0\t{UNRESOLVED_RC}\t{UNRESOLVED}\n"
        # the lookup: the queue's jobs with their working directories, and the markers
        assert sent.job_dirs == ["second"], sent
        return f"201 {ROOT}/second\n" + poll_answer({}, {})

    transport = ScriptedTransport(submit=script)
    async with serving(transport) as (loop, _, recorder):
        outcomes = await submit_all(loop, [request(tmp_path, d) for d in ("first", "second")])
    assert outcomes == {"first": "100", "second": "201"} and recorder.submitted_ids == outcomes
    assert calls == 3, "the job found in the queue was submitted again"


async def test_jobs_wait_for_room_in_the_window_and_go_when_it_frees(tmp_path: Path) -> None:
    transport = ScriptedTransport(submit=answer_each(lambda d: d.removeprefix("job")))
    async with serving(transport, limit=2) as (loop, window, _):
        outcomes: dict[str, str] = {}

        async def one(r: SubmitRequest) -> None:
            outcomes[r.job_dir] = await loop.submit(r)

        async with anyio.create_task_group() as tasks:
            for i in range(4):
                tasks.start_soon(one, request(tmp_path, f"job{i}"))
            while len(outcomes) < 2:
                await anyio.sleep(0.01)
            await anyio.sleep(0.3)  # longer than a batch's wait: the others stay waiting
            assert len(outcomes) == 2 and window.full() and loop.waiting_count() == 2
            window.left([next(iter(outcomes))])  # one job ended
            while len(outcomes) < 3:
                await anyio.sleep(0.01)
            assert loop.waiting_count() == 1 and window.peak == 2
            window.left(list(outcomes))
    assert [len(b) for b in batches(transport)] == [2, 1, 1]
