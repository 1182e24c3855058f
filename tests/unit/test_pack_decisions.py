"""Packing's pure decisions (pack/workers.py): dead workers, chunks put back, workers to start."""

from __future__ import annotations

import math

from wfl_async.jobs.states import QueueState
from wfl_async.pack.queue import PackQueue
from wfl_async.pack.workers import UNSEEN_GRACE, PackDecision, WorkerState, is_alive, judge, workers_to_start

GRACE = 10.0


def ids(answer: str, own_id: str | None) -> str | None:
    """The worker's id as the test's submit answers give it: ``"0 <id>"``, or unknown."""
    rc, _, rest = answer.partition(" ")
    return rest or own_id if rc == "0" else own_id


def queue(workers: dict[str, str], taken: dict[str, str] | None = None) -> PackQueue:
    return PackQueue(indexed=1, retry=set(), taken=taken or {}, workers=workers)  # one chunk waits


def decide(workers: dict[str, WorkerState], listed: PackQueue, states: dict[str, QueueState] | None,
           now: float) -> PackDecision:
    return judge(workers, listed, states, now=now, grace=GRACE, where="hpc", worker_id=ids)


def test_a_worker_missing_from_the_queue_dies_by_the_job_grace_rule_and_its_chunks_go_back() -> None:
    mine = {"w1": WorkerState(submitted_at=0.0, remote_id="7", seen=True)}
    listed = queue({"w1": "0 7"}, taken={"c1": "w1"})
    first = decide(mine, listed, {}, now=100.0)  # gone from the queue: missing, not dead yet
    assert first.workers["w1"].missing_since == 100.0 and not first.requeue
    within = decide(first.workers, listed, {}, now=100.0 + GRACE)
    assert not within.requeue
    dead = decide(within.workers, listed, {}, now=100.0 + GRACE + 1)
    assert dead.dead == ("w1",) and dead.orphans == (("c1", "w1"),) and dead.requeue


def test_a_worker_listed_again_is_not_missing_and_a_failed_listing_judges_nobody() -> None:
    mine = {"w1": WorkerState(submitted_at=0.0, remote_id="7", seen=True, missing_since=1.0)}
    listed = queue({"w1": "0 7"}, taken={"c1": "w1"})
    back = decide(mine, listed, {"7": QueueState.RUNNING}, now=100.0)
    assert back.workers["w1"].missing_since is None and not back.requeue
    blind = decide(mine, listed, None, now=100.0)
    assert blind.workers["w1"].missing_since is None and not blind.requeue


def test_an_earlier_runs_worker_is_found_and_a_chunk_taken_by_an_unknown_worker_is_an_orphan() -> None:
    listed = queue({"old": "0 5"}, taken={"c1": "old", "c2": "ghost"})
    decision = decide({}, listed, {"5": QueueState.QUEUED}, now=50.0)
    assert decision.found == ("old",) and decision.workers["old"].submitted_at == -math.inf
    assert decision.orphans == (("c2", "ghost"),) and decision.dead == ()
    # without the scheduler's answer, no chunk is called an orphan
    assert decide({}, listed, None, now=50.0).orphans == ()


def test_a_worker_that_exited_is_forgotten_and_one_just_submitted_is_given_time() -> None:
    mine = {"exited": WorkerState(submitted_at=0.0, remote_id="3", seen=True),
            "new": WorkerState(submitted_at=90.0),
            "never": WorkerState(submitted_at=0.0)}
    decision = decide(mine, queue({}), {}, now=90.0 + UNSEEN_GRACE - 1)
    assert set(decision.gone) == {"exited", "never"} and set(decision.workers) == {"new"}


def test_a_worker_whose_answer_was_lost_is_never_called_dead() -> None:
    listed = queue({"w1": "1"}, taken={"c1": "w1"})  # its submit answer lost, no id of its own yet
    decision = decide({"w1": WorkerState(submitted_at=0.0)}, listed, {}, now=1000.0)
    worker = decision.workers["w1"]
    assert worker.remote_id is None and worker.first_unknown == 1000.0 and not decision.requeue
    assert is_alive(worker, now=1000.0 + 4 * UNSEEN_GRACE - 1, grace=GRACE)
    assert not is_alive(worker, now=1000.0 + 4 * UNSEEN_GRACE, grace=GRACE)


def test_alive_counts_by_the_same_grace() -> None:
    unseen = WorkerState(submitted_at=0.0)
    assert is_alive(unseen, now=UNSEEN_GRACE - 1, grace=GRACE) and not is_alive(unseen, now=UNSEEN_GRACE, grace=GRACE)
    missing = WorkerState(submitted_at=0.0, remote_id="7", seen=True, missing_since=100.0)
    assert is_alive(missing, now=100.0 + GRACE, grace=GRACE) and not is_alive(missing, now=100.1 + GRACE, grace=GRACE)


def test_workers_to_start_never_pass_the_target_or_the_untaken_chunks() -> None:
    assert workers_to_start(target=8, alive=0, queued=3) == 3
    assert workers_to_start(target=2, alive=0, queued=30) == 2
    assert workers_to_start(target=2, alive=2, queued=30) == 0
    assert workers_to_start(target=8, alive=5, queued=0) == 0  # chunks being run have their worker
