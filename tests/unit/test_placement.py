"""The placement rule (pure): reading a sys_name list, spreading chunks, choosing which waiting chunks move."""

from __future__ import annotations

import pytest

from wfl_async.autoparallelize.remoteinfo import RemoteInfo
from wfl_async.errors import ConfigurationError
from wfl_async.pack.queue import take_back_command
from wfl_async.placement.choices import Choice, parse_sys_names
from wfl_async.placement.decide import MIN_PATIENCE, Measured, Seen, plan_moves, spread
from wfl_async.placement.measure import measured_from


def test_a_sys_name_list_keeps_its_order_and_a_dict_orders_by_weight() -> None:
    assert parse_sys_names("a") == (Choice("a"),)
    assert parse_sys_names(["b", "a"]) == (Choice("b"), Choice("a"))
    assert parse_sys_names({"a": 1, "b": 3}) == (Choice("b", 3.0), Choice("a", 1.0))


@pytest.mark.parametrize("bad", [[], ["a", "a"], {"a": 0}, {"a": "x"}, 3, ["a", 2]])
def test_a_malformed_sys_name_is_refused_naming_the_accepted_forms(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="sys_name"):
        RemoteInfo(sys_name=bad, job_name="j", resources={"num_cores": 1})  # type: ignore[arg-type]


def test_nothing_measured_spreads_by_weight_interleaved() -> None:
    assert spread(4, parse_sys_names(["a", "b"]), {}) == ["a", "b", "a", "b"]
    placed = spread(9, parse_sys_names({"a": 2, "b": 1}), {})
    assert placed.count("a") == 6 and placed.count("b") == 3
    assert placed[:3] == ["a", "b", "a"]


def test_measured_systems_get_chunks_by_expected_start() -> None:
    measured = {"slow": Measured(queue_wait=100.0, throughput=1.0), "fast": Measured(queue_wait=0.0, throughput=1.0)}
    placed = spread(150, parse_sys_names(["slow", "fast"]), measured)
    # the fast one takes every chunk until its line is 100 s long, then they share
    assert placed[:100] == ["fast"] * 100 and placed.count("slow") == 25


def test_figures_come_from_submit_start_and_finish_times() -> None:
    m = measured_from([(0.0, 10.0, 20.0), (0.0, 30.0, 40.0), (10.0, 20.0, 60.0)])
    assert m.queue_wait == 10.0 and m.throughput == pytest.approx(3 / 60)
    assert not measured_from([]).known


def test_waiting_chunks_move_from_a_stalled_system_to_one_that_drains() -> None:
    now = 1000.0
    seen = {"slow": Seen(waiting={f"k{i}": now - 60 + i for i in range(6)}, first_submitted=now - 60),
            "fast": Seen(starts=[now - 50 + i for i in range(10)], first_submitted=now - 60, waits=[1.0, 2.0])}
    moves = plan_moves(seen, {}, set(), now)
    assert {m.key for m in moves} == {f"k{i}" for i in range(6)}  # the stalled system started none: all move
    assert all(m.source == "slow" and m.target == "fast" and "never (none started lately)" in m.reason
               for m in moves)
    # each chunk moves at most once in its life
    assert plan_moves(seen, {}, {f"k{i}" for i in range(6)}, now) == []


def test_a_system_that_stops_starting_chunks_mid_run_loses_its_line() -> None:
    now = 1000.0
    # 'a' started 30 chunks long ago (none in the last minute), 'b' keeps starting one a second
    seen = {"a": Seen(waiting={"k0": now - 70, "k1": now - 65}, starts=[now - 200 + i for i in range(30)],
                      first_submitted=now - 300),
            "b": Seen(waiting={"x": now - 1}, starts=[now - 59 + i for i in range(59)], first_submitted=now - 300,
                      waits=[1.0])}
    assert {m.key for m in plan_moves(seen, {}, set(), now)} == {"k0", "k1"}


def test_a_system_that_stopped_a_few_gaps_ago_counts_as_stopped_before_its_window_ends() -> None:
    now = 1000.0
    # 'a' started one a second until 10 s ago (its 60 s rate is still 0.8/s), then nothing
    seen = {"a": Seen(waiting={"k0": now - 9, "k1": now - 8}, starts=[now - 58 + i for i in range(48)],
                      first_submitted=now - 100),
            "b": Seen(starts=[now - 30 + i for i in range(30)], first_submitted=now - 100, waits=[1.0])}
    assert {m.key for m in plan_moves(seen, {}, set(), now)} == {"k0", "k1"}


def test_no_move_before_the_patience_or_when_the_target_is_no_sooner() -> None:
    now = 1000.0
    young = {"slow": Seen(waiting={"k": now - MIN_PATIENCE / 2}, first_submitted=now - 1),
             "fast": Seen(starts=[now - 5, now - 4, now - 3], first_submitted=now - 10)}
    assert plan_moves(young, {}, set(), now) == []
    # both start a chunk a second; the target's own line is as long: nothing gains by moving
    even = {"a": Seen(waiting={f"k{i}": now - 100 for i in range(5)}, starts=[now - i for i in range(60)],
                      first_submitted=now - 200),
            "b": Seen(waiting={f"x{i}": now - 100 for i in range(5)}, starts=[now - i for i in range(60)],
                      first_submitted=now - 200)}
    assert plan_moves(even, {}, set(), now) == []


def test_a_source_that_drains_too_moves_only_the_end_of_its_line() -> None:
    now = 100.0
    # 'a' starts one chunk every 10 s, 'b' one a second with nothing waiting (queue wait 1 s)
    seen = {"a": Seen(waiting={f"k{i}": float(i) for i in range(8)}, starts=[10.0 * i for i in range(10)],
                      first_submitted=0.0),
            "b": Seen(starts=[float(i) for i in range(60, 100)], first_submitted=0.0, waits=[1.0])}
    moved = {m.key for m in plan_moves(seen, {}, set(), now)}
    assert moved and "k0" not in moved and "k7" in moved
    assert moved == {f"k{i}" for i in range(min(int(k[1:]) for k in moved), 8)}  # the end of the line


def test_taking_a_packed_chunk_back_is_one_rename_out_of_the_queue() -> None:
    text = take_back_command("p1", "job dir;x")
    assert "mv -- _wfl_async_pack/p1/todo/'job dir;x' _wfl_async_pack/p1/moved/'job dir;x'" in text


def test_the_progress_line_of_a_call_over_several_systems_shows_each_ones_counts() -> None:
    from wfl_async.progress import Progress

    progress = Progress.for_call("relax", None, total_chunks=4, total_items=4, enabled=False,
                                 detail=lambda: "a q1 r1 d0 | b q0 r0 d2 | moved 1")
    assert progress.summary().endswith("| a q1 r1 d0 | b q0 r0 d2 | moved 1")
