"""The poll loop driven by a scripted transport (no daemon): finishing, dying, a scheduler that
does not answer, and the window room of finished jobs.

Each behaviour is also tested against the real schedulers (tests/remote); these tests pin the
loop's own decisions quickly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from tests.helpers.scripted import ListRecorder, ScriptedTransport, Sent, poll_answer, slurm_config, tar_of
from wfl_async.jobs import layout
from wfl_async.jobs.states import Marker, Phase, VerdictKind
from wfl_async.scheduler import get_scheduler
from wfl_async.system.machine import Machine
from wfl_async.system.poll_loop import PollLoop
from wfl_async.system.requests import JobOutcome, Watch
from wfl_async.system.window import QueueWindow


def watch(tmp_path: Path, job_dir: str = "job", remote_id: str = "42") -> Watch:
    return Watch(job_dir=job_dir, remote_id=remote_id, fetch=[], local_root=tmp_path, check_interval=0.2)


@asynccontextmanager
async def serving(transport: ScriptedTransport, *, limit: int | None = None, grace: float = 0.0,
                  ) -> AsyncIterator[tuple[PollLoop, QueueWindow, ListRecorder]]:
    machine = Machine(slurm_config(died_grace_seconds=grace), transport, get_scheduler("slurm"), "project")
    window, recorder = QueueWindow(limit), ListRecorder()
    loop = PollLoop(machine, window, recorder)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(loop.run)
        with anyio.fail_after(10):
            yield loop, window, recorder
        tasks.cancel_scope.cancel()


async def test_a_finished_job_is_fetched_recorded_and_woken_and_its_room_waits_for_the_listing(
        tmp_path: Path) -> None:
    polls: list[Sent] = []

    def poll(sent: Sent) -> str:
        polls.append(sent)
        if len(polls) < 3:  # still listed (its last lines) after its marker
            return poll_answer({"42": "RUNNING"}, {"job": "succeeded"} if len(polls) == 2 else {"job": "started"})
        return poll_answer({})

    transport = ScriptedTransport(poll=poll, fetch=lambda sent: tar_of({f"job/{layout.SUCCEEDED}": b"ok"}))
    async with serving(transport, limit=1) as (loop, window, recorder):
        job = watch(tmp_path)
        outcome = await loop.wait(job)
        assert outcome == JobOutcome(Marker.SUCCEEDED, outcome.queue_state) and job.phase is Phase.ENDED
        assert window.full() and window.leaving()  # the queue still lists it
        while window.used:
            await anyio.sleep(0.05)
    assert [(d, v.kind) for d, v in recorder.progress] == [("job", VerdictKind.ACTIVE), ("job", VerdictKind.FINISHED)]
    assert transport.kinds().count("fetch") == 1 and polls[0].job_dirs == ["job"]


async def test_a_job_gone_from_the_queue_without_a_final_marker_dies_after_the_grace(tmp_path: Path) -> None:
    transport = ScriptedTransport(poll=lambda sent: poll_answer({}, {}))
    async with serving(transport, limit=1, grace=0.3) as (loop, window, recorder):
        with anyio.fail_after(5):
            outcome = await loop.wait(watch(tmp_path))
    assert outcome.marker is None and "left the queue of hpc (no longer listed)" in outcome.message
    assert [v.kind for _, v in recorder.progress] == [VerdictKind.DIED]
    assert transport.kinds().count("poll") >= 3 and window.used == 0  # missing, still missing, died
    assert "fetch" not in transport.kinds()


async def test_a_scheduler_that_does_not_answer_makes_no_job_died(tmp_path: Path) -> None:
    transport = ScriptedTransport(poll=lambda sent: poll_answer(None, {}))
    async with serving(transport) as (loop, _, recorder):
        job = watch(tmp_path)
        with anyio.move_on_after(1.5):
            await loop.wait(job)
        assert transport.kinds().count("poll") >= 5 and job.outcome is None and not recorder.progress


async def test_later_polls_ask_only_about_jobs_that_need_a_look(tmp_path: Path) -> None:
    polls: list[Sent] = []

    def poll(sent: Sent) -> str:
        polls.append(sent)
        return poll_answer({"1": "PENDING", "2": "RUNNING"}, {"b": "started"} if "b" in sent.job_dirs else {})

    transport = ScriptedTransport(poll=poll)
    async with serving(transport) as (loop, _, _):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(loop.wait, watch(tmp_path, "a", "1"))
            tasks.start_soon(loop.wait, watch(tmp_path, "b", "2"))
            while len(polls) < 3:
                await anyio.sleep(0.05)
            assert loop.watches["b"].started and not loop.watches["a"].started
            tasks.cancel_scope.cancel()
    assert sorted(polls[0].job_dirs) == ["a", "b"] and polls[2].job_dirs == []  # both scanned, both queued


class _NoPassOverAll(dict[str, Watch]):
    """Watches that fail a pass over them all (a quiet poll's cost must not grow with the jobs waiting)."""

    def values(self):  # type: ignore[override]
        raise AssertionError("a pass over every watch")


async def test_a_quiet_listing_interval_weighs_the_started_jobs_without_a_pass_over_every_watch(
        tmp_path: Path) -> None:
    polls: list[Sent] = []

    def poll(sent: Sent) -> str:
        polls.append(sent)
        return poll_answer({"1": "PENDING", "2": "RUNNING"}, {"b": "started"} if "b" in sent.job_dirs else {})

    async with serving(ScriptedTransport(poll=poll)) as (loop, _, _):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(loop.wait, watch(tmp_path, "a", "1"))
            tasks.start_soon(loop.wait, watch(tmp_path, "b", "2"))
            while len(polls) < 3:
                await anyio.sleep(0.05)
            started = loop.watches["b"].state.started_at
            assert started is not None and loop.watches["a"].state.started_at is None
            loop.watches = _NoPassOverAll(loop.watches)
            loop._last_change -= 1000.0  # quiet: the interval backs off, to the poll_max_interval (30 s) at most
            assert loop.listing_interval(started + 1.0) == 30.0
            loop._durations.append(3.0)  # b is expected to end 2 s later: the listing comes then
            assert loop.listing_interval(started + 1.0) == 2.0
            loop.watches = dict(loop.watches)
            tasks.cancel_scope.cancel()


async def test_a_waiter_that_gives_up_is_forgotten_and_the_period_follows_the_watches_left(tmp_path: Path) -> None:
    transport = ScriptedTransport(poll=lambda sent: poll_answer({"1": "PENDING", "2": "PENDING"}, {}))
    async with serving(transport) as (loop, _, _):
        quick = Watch(job_dir="quick", remote_id="1", fetch=[], local_root=tmp_path, check_interval=0.3)
        with anyio.move_on_after(0.5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(loop.wait, quick)
                tasks.start_soon(loop.wait, watch(tmp_path, "slow", "2"))  # not waited for past the scope either
        assert loop.base_interval() == 0.2  # the smallest of the two
        slow = Watch(job_dir="slow", remote_id="2", fetch=[], local_root=tmp_path, check_interval=5.0)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(loop.wait, slow)
            while loop.watches.get("slow") is not slow or "quick" in loop.watches:
                await anyio.sleep(0.05)
            assert loop.base_interval() == 5.0 and list(loop.watches) == ["slow"]  # both given-up watches gone
            tasks.cancel_scope.cancel()
async def test_a_job_settled_in_the_queue_is_looked_at_again_once_its_listing_line_changes(tmp_path: Path) -> None:
    """Polls skip a job listed active as before; its line going (no final marker) is news: it dies."""
    polls: list[Sent] = []

    def poll(sent: Sent) -> str:
        polls.append(sent)
        listed = {"7": "PENDING"} if len(polls) < 4 else {}
        return poll_answer({"42": "RUNNING", **listed} if len(polls) < 6 else {"7": "PENDING"}, {})

    transport = ScriptedTransport(poll=poll)
    async with serving(transport, grace=0.3) as (loop, _, recorder):
        outcome = await loop.wait(watch(tmp_path))
    assert outcome.marker is None and "no longer listed" in outcome.message
    assert len(polls) >= 7 and [v.kind for _, v in recorder.progress][-1] is VerdictKind.DIED


def _finishing(polls: list[Sent], after: int) -> ScriptedTransport:
    """Job 42 in ``job``, listed running; its final marker is there from poll ``after + 1`` on (each poll
    is kept in ``polls``)."""

    def poll(sent: Sent) -> str:
        polls.append(sent)
        return poll_answer({"42": "RUNNING"}, {"job": "succeeded" if len(polls) > after else "started"})

    return ScriptedTransport(poll=poll, fetch=lambda sent: tar_of({f"job/{layout.SUCCEEDED}": b"ok"}))


async def test_two_waits_for_one_job_are_both_woken(tmp_path: Path) -> None:
    """Two coroutines of one session waiting for the same job (two identical calls at once: the second
    re-attaches): the second watch must not make the loop forget the first, whose waiter would then
    wait for ever."""
    polls: list[Sent] = []
    transport = _finishing(polls, after=3)
    async with serving(transport) as (loop, _, _):
        first, second = watch(tmp_path), watch(tmp_path)
        outcomes: list[JobOutcome] = []

        async def wait(job: Watch) -> None:
            outcomes.append(await loop.wait(job))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait, first)
            while len(polls) < 2:
                await anyio.sleep(0.02)
            tasks.start_soon(wait, second)
    assert [o.marker for o in outcomes] == [Marker.SUCCEEDED] * 2 and first.phase is second.phase is Phase.ENDED
    assert transport.kinds().count("fetch") == 1 and loop.watches == {}


async def test_a_second_wait_for_a_job_takes_over_when_the_first_gives_up(tmp_path: Path) -> None:
    polls: list[Sent] = []
    async with serving(_finishing(polls, after=6)) as (loop, _, _):
        first, second = watch(tmp_path), watch(tmp_path)
        outcomes: list[JobOutcome] = []

        async def wait_second() -> None:
            outcomes.append(await loop.wait(second))

        async with anyio.create_task_group() as tasks:
            with anyio.move_on_after(0.5):  # the first waiter gives up; the second goes on waiting
                async with anyio.create_task_group() as firsts:
                    firsts.start_soon(loop.wait, first)
                    while len(polls) < 2:
                        await anyio.sleep(0.02)
                    tasks.start_soon(wait_second)
                    await anyio.sleep_forever()
            assert len(polls) < 6 and not outcomes
    assert [o.marker for o in outcomes] == [Marker.SUCCEEDED] and first.outcome is None and loop.watches == {}


async def test_a_job_recorded_succeeded_is_fetched_at_once_and_looked_at_if_its_marker_is_gone(tmp_path: Path) -> None:
    """A rerun whose local results were removed: a job whose record says it succeeded is fetched with no
    survey first; one whose fetch brings no final marker (its directory emptied) is looked at as any
    watched job (here: gone from the queue, so it dies after the grace), never taken as succeeded."""
    polls: list[Sent] = []

    def poll(sent: Sent) -> str:
        polls.append(sent)
        return poll_answer({}, {})

    def fetch(sent: Sent) -> bytes:
        return tar_of({f"kept/{layout.SUCCEEDED}": b"ok"})  # (its name list holds 'emptied' too)

    transport = ScriptedTransport(poll=poll, fetch=fetch)
    async with serving(transport, grace=0.3) as (loop, _, recorder):
        kept, emptied = watch(tmp_path, "kept", "1"), watch(tmp_path, "emptied", "2")
        for job in (kept, emptied):
            job.remote_root, job.recorded_succeeded = "/remote/project", True
        outcomes = {}

        async def wait(job: Watch) -> None:
            outcomes[job.job_dir] = await loop.wait(job)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait, kept)
            tasks.start_soon(wait, emptied)
    assert outcomes["kept"].marker is Marker.SUCCEEDED and outcomes["emptied"].marker is None
    assert transport.kinds()[0] == "fetch" and all(p.job_dirs in ([], ["emptied"]) for p in polls)
    assert ["emptied"] in [p.job_dirs for p in polls]  # its markers looked at after the fetch
    assert [(d, v.kind) for d, v in recorder.progress] == [("kept", VerdictKind.FINISHED), ("emptied", VerdictKind.DIED)]
