"""The one set of rules that moves a job between states (jobs/states.py), tested directly."""

from __future__ import annotations

import pytest

from wfl_async.jobs.states import (
    JobStatus,
    Marker,
    Phase,
    QueueState,
    Step,
    Verdict,
    VerdictKind,
    WatchState,
    classify,
    observe,
    past_grace,
    status_update,
    unchanged,
)

GRACE = 10.0


def judge(marker: str | None = None, states: dict[str, QueueState] | None = None,
          missing_for: float | None = None) -> Verdict:
    return classify(remote_id="42", marker=marker, states=states, missing_for=missing_for, grace=GRACE, where="hpc")


# ---------------------------------------------------------------------- classify
@pytest.mark.parametrize("marker", ["succeeded", "failed"])
def test_a_final_marker_finishes_a_job_whatever_the_queue_says(marker: str) -> None:
    for states in (None, {}, {"42": QueueState.RUNNING}, {"42": QueueState.FAILED}):
        verdict = judge(marker, states, missing_for=1e6)
        assert verdict == Verdict(VerdictKind.FINISHED, Marker(marker), QueueState.FINISHED)


def test_a_failed_status_command_never_makes_a_job_died() -> None:
    verdict = judge(None, None, missing_for=1e6)
    assert verdict.kind is VerdictKind.ACTIVE and verdict.queue_state is None


@pytest.mark.parametrize("state", [QueueState.QUEUED, QueueState.HELD, QueueState.RUNNING, QueueState.UNKNOWN])
def test_a_listed_active_job_is_active(state: QueueState) -> None:
    verdict = judge("started", {"42": state}, missing_for=1e6)
    assert verdict.kind is VerdictKind.ACTIVE and verdict.queue_state is state and verdict.started


def test_a_job_gone_from_the_queue_is_missing_until_the_grace_has_passed() -> None:
    assert judge(None, {}, missing_for=None).kind is VerdictKind.MISSING  # first seen missing
    assert judge(None, {}, missing_for=GRACE).kind is VerdictKind.MISSING  # not *longer* than the grace
    died = judge("started", {}, missing_for=GRACE + 0.1)
    assert died.kind is VerdictKind.DIED and died.marker is Marker.STARTED
    assert "job 42 left the queue of hpc (no longer listed)" in died.message and "10 s" in died.message


def test_a_timed_out_job_says_so_when_it_dies() -> None:
    died = judge(None, {"42": QueueState.TIMEOUT}, missing_for=GRACE + 1)
    assert died.kind is VerdictKind.DIED and died.queue_state is QueueState.TIMEOUT
    assert "killed at its time limit" in died.message and "(TIMEOUT)" in died.message


def test_the_grace_rule() -> None:
    assert not past_grace(None, 0.0) and not past_grace(GRACE, GRACE) and past_grace(GRACE + 0.01, GRACE)


# ---------------------------------------------------------------------- status_update
def test_status_updates_of_each_verdict() -> None:
    assert status_update(judge("succeeded")) == {"status": JobStatus.SUCCEEDED}
    assert status_update(judge("failed")) == {"status": JobStatus.FAILED}
    died = judge(None, {}, missing_for=GRACE + 1)
    assert status_update(died) == {"status": JobStatus.DIED, "message": died.message, "end_cause": None}
    started = judge("started", {"42": QueueState.RUNNING})
    assert status_update(started) == {"status": JobStatus.STARTED}
    assert status_update(started, JobStatus.SUBMITTED) == {"status": JobStatus.STARTED}
    assert status_update(started, JobStatus.STARTED) is None  # recorded once
    assert status_update(judge(None, {"42": QueueState.QUEUED})) is None
    assert status_update(judge(None, {}, missing_for=1.0)) is None  # missing, within the grace


# ---------------------------------------------------------------------- observe (the poll loop's steps)
def look(state: WatchState, *seen: str | None, states: dict[str, QueueState] | None = None, listed: bool = True,
         now: float = 100.0) -> tuple[WatchState, Verdict, Step]:
    return observe(state, remote_id="42", seen=seen, states=states, listed=listed, now=now, grace=GRACE, where="hpc")


WATCHED = WatchState().taken()


def test_a_watched_job_that_starts_is_recorded_started_once() -> None:
    assert WatchState().phase is Phase.NEW and WATCHED.phase is Phase.WATCHED
    state, verdict, step = look(WATCHED, "started", states={"42": QueueState.RUNNING})
    assert step is Step.STARTED and state.started_at == 100.0 and state.marker is Marker.STARTED
    assert state.queue_active and state.phase is Phase.WATCHED
    again, _, step = look(state, "started", states={"42": QueueState.RUNNING}, now=105.0)
    assert step is Step.NOTHING and again.started_at == 100.0


def test_a_final_marker_from_either_source_sends_the_job_to_be_fetched() -> None:
    for seen in (("succeeded", None), (None, "succeeded"), ("started", "succeeded")):
        state, verdict, step = look(WATCHED, *seen, states={"42": QueueState.RUNNING})
        assert step is Step.FETCH and state.phase is Phase.FETCHING and verdict.marker is Marker.SUCCEEDED


def test_a_final_marker_is_never_replaced_by_a_later_started_line() -> None:
    state, _, _ = look(WATCHED, "failed", "started")
    assert state.marker is Marker.FAILED


def test_a_job_gone_from_the_queue_dies_after_the_grace_and_only_by_listings() -> None:
    state, _, step = look(WATCHED, None, states={}, now=100.0)
    assert step is Step.NOTHING and state.missing_since == 100.0 and not state.queue_active
    # polls that do not list the queue neither start nor stop the clock
    unlisted, _, step = look(state, None, states=None, listed=False, now=200.0)
    assert step is Step.NOTHING and unlisted.missing_since == 100.0 and unlisted.phase is Phase.WATCHED
    # listed again: still missing within the grace, then died
    state, _, step = look(unlisted, None, states={}, now=100.0 + GRACE)
    assert step is Step.NOTHING and state.missing_since == 100.0
    state, verdict, step = look(state, None, states={}, now=100.0 + GRACE + 1)
    assert step is Step.DIED and state.phase is Phase.ENDED and verdict.kind is VerdictKind.DIED


def test_a_job_listed_again_is_no_longer_missing() -> None:
    state, _, _ = look(WATCHED, None, states={}, now=100.0)
    state, _, step = look(state, None, states={"42": QueueState.QUEUED}, now=200.0)
    assert step is Step.NOTHING and state.missing_since is None and state.queue_active


def test_a_failed_listing_keeps_the_job_active() -> None:
    state, verdict, step = look(WATCHED, None, states=None, listed=True, now=1e6)
    assert step is Step.NOTHING and verdict.kind is VerdictKind.ACTIVE and state.queue_active


def test_fetch_outcomes_move_the_job_back_to_watched() -> None:
    fetching, _, _ = look(WATCHED, "succeeded")
    scanned = fetching.after_scan()
    assert scanned.fetch_failed().phase is Phase.WATCHED and scanned.fetch_failed().marker is Marker.SUCCEEDED
    again = scanned.no_final_marker()
    assert again.phase is Phase.WATCHED and again.marker is None and not again.scanned
    assert again.ended().phase is Phase.ENDED


_SEEN = [(None, None), ("started", None), (None, "succeeded"), ("failed", None)]
_LISTINGS = [(False, None), (True, None), (True, {}), (True, {"42": QueueState.RUNNING}),
             (True, {"42": QueueState.TIMEOUT})]


def _reachable(depth: int = 3) -> set[WatchState]:
    """Every state a watched job reaches in ``depth`` polls of any kind (and after a failed fetch)."""
    states, frontier = {WATCHED}, {WATCHED}
    for poll in range(depth):
        after = set()
        for state in frontier:
            for seen in _SEEN:
                for listed, queue in _LISTINGS:
                    new, _, _ = look(state, *seen, states=queue, listed=listed, now=100.0 + 20 * poll)
                    after.add(new.fetch_failed() if new.phase is Phase.FETCHING else new)
        frontier = after - states
        states |= after
    return {s for s in states if s.phase is Phase.WATCHED}


def test_a_job_the_poll_loop_skips_as_unchanged_is_one_observe_would_leave_alone() -> None:
    skipped = 0
    for state in _reachable():
        for seen in _SEEN:
            for listed, queue in _LISTINGS:
                if unchanged(state, remote_id="42", seen=seen, states=queue, listed=listed):
                    skipped += 1
                    after, verdict, step = look(state, *seen, states=queue, listed=listed, now=500.0)
                    assert (after, step) == (state, Step.NOTHING), (state, seen, queue, listed, verdict)
    assert skipped > 20  # the rule skips something: quiet jobs of listed and unlisted polls


def test_a_quiet_active_job_is_skipped_and_a_changed_one_is_not() -> None:
    running, _, _ = look(WATCHED, "started", states={"42": QueueState.RUNNING})
    assert unchanged(running, remote_id="42", seen=(None, None), states={"42": QueueState.RUNNING}, listed=True)
    assert unchanged(running, remote_id="42", seen=(None, None), states=None, listed=False)
    assert not unchanged(running, remote_id="42", seen=(None, None), states={}, listed=True)  # left the queue
    assert not unchanged(running, remote_id="42", seen=(None, "succeeded"), states=None, listed=False)
    refetch = look(running, "succeeded")[0].fetch_failed()
    assert not unchanged(refetch, remote_id="42", seen=(None, None), states=None, listed=False)
