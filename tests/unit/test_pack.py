"""Packing's pure parts against a real shell and a real filesystem: queue commands, the worker loop, settings, self-tuning."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import time
from pathlib import Path

import pytest

from wfl_async.errors import ConfigurationError
from wfl_async.jobs import layout
from wfl_async.jobs.integrity import read_verified_result
from wfl_async.jobs.options import JobOptions
from wfl_async.jobs.pack_option import TUNED_IDLE_SECONDS, PackSetting, effective_pack
from wfl_async.jobs.states import QueueState
from wfl_async.pack import queue, tuning
from wfl_async.pack import worker as pack_worker
from wfl_async.scheduler.base import JobScriptSpec
from wfl_async.scheduler.slurm import SlurmScheduler

PID = "0123456789abcdef"


def sh(root: Path, command: str) -> str:
    return subprocess.run(["bash", "-c", command], cwd=root, check=True, capture_output=True, text=True).stdout


def make_chunk(root: Path, name: str, value: int) -> None:
    (root / name).mkdir()
    (root / name / layout.TASK).write_bytes(pickle.dumps((int, (str(value),), {})))


def slot(q: Path, n: int) -> list[str]:
    return (q / "slots" / str(n)).read_text().split()


def test_enqueue_is_idempotent_skips_taken_and_finished_chunks_and_indexes_each_batch_in_a_slot(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d"):
        (tmp_path / name).mkdir()
    (tmp_path / "c" / layout.SUCCEEDED).write_text("{}")
    assert sh(tmp_path, queue.enqueue_command(PID, ["a", "b"])).split() == ["N", "a", "N", "b"]
    q = tmp_path / queue.queue_dir(PID)
    assert slot(q, 0) == ["2", "a", "b"]  # the running total, then the names in order
    os.rename(q / "todo" / "b", q / "taken" / "b@w1")  # a worker took b
    out = sh(tmp_path, queue.enqueue_command(PID, ["a", "b", "c", "d"]))  # a repeat, plus new ones
    assert out.split() == ["E", "a", "E", "b", "E", "c", "N", "d"]
    assert sorted(os.listdir(q / "todo")) == ["a", "d"] and os.listdir(q / "taken") == ["b@w1"]
    # a, still waiting, is indexed again (the first command may have been cut before its slot)
    assert slot(q, 1) == ["4", "a", "d"] and not (q / "slots" / "2").exists()
    assert sh(tmp_path, queue.enqueue_command(PID, ["b", "c"])).split() == ["E", "b", "E", "c"]
    assert not (q / "slots" / "2").exists()  # nothing to index: no slot
    assert [n for n in os.listdir(q) if n.startswith(".")] == []  # no temporary file left


def test_listing_shows_counts_given_back_taken_gone_and_live_workers_then_requeue_gives_back_once(
        tmp_path: Path) -> None:
    sh(tmp_path, queue.enqueue_command(PID, ["a", "b", "c", "e"]))
    q = tmp_path / queue.queue_dir(PID)
    for worker, chunk in (("w1", "b"), ("w2", "c")):
        (q / "workers" / worker).mkdir(parents=True)
        (q / "workers" / worker / layout.SUBMIT_ANSWER).write_text(f"0\nSubmitted batch job 4{worker[1]}\n")
        os.rename(q / "todo" / chunk, q / "taken" / f"{chunk}@{worker}")
    (q / "head").write_text("0 3\n")  # the workers went past a, b and c (a was unqueued)
    sh(tmp_path, queue.unqueue_command(PID, ["a", "x"]))
    (q / "workers" / "w2" / queue.JOB_ID).write_text("42\n")  # w2 has started: it knows its own id
    (q / "workers" / "w3").mkdir()
    (q / "workers" / "w3" / queue.EXITED).touch()
    text = sh(tmp_path, queue.listing_command(str(tmp_path)))
    assert text.rstrip().endswith(queue.LISTING_END)
    pack = queue.parse_listing(text).packs[PID]
    assert (pack.indexed, pack.passed, pack.queued) == (4, 3, 1)  # e waits
    assert pack.taken == {"b": "w1", "c": "w2"} and pack.gone == {"a"} and pack.retry == set()
    assert pack.workers == {"w1": "0 Submitted batch job 41", "w2": "0 Submitted batch job 42"}
    assert pack.own_ids == {"w2": "42"}
    states = queue.ChunkStates(queue.parse_listing(text), {"77": QueueState.RUNNING})
    assert {name: states.get(queue.chunk_remote_id(PID, name)) for name in "abce"} == {
        "a": None, "b": QueueState.RUNNING, "c": QueueState.RUNNING, "e": QueueState.QUEUED}
    assert states.get("77") is QueueState.RUNNING and states.get(queue.chunk_remote_id("other", "e")) is None
    # w1 died running b; c reached its final marker just before w2 died: only b is given back
    (tmp_path / "c").mkdir(exist_ok=True)
    (tmp_path / "c" / layout.SUCCEEDED).write_text("{}")
    command = queue.requeue_command(PID, [("b", "w1"), ("c", "w2")], ["w1", "w2"])
    assert queue.moved_by(sh(tmp_path, command)) == (1, 0)
    assert queue.moved_by(sh(tmp_path, command)) == (0, 0)  # repeated (a dropped connection, an old listing)
    assert os.listdir(q / "retry") == ["b"] and os.listdir(q / "taken") == []
    assert (q / "retry" / "b").read_text().split() == ["w1"]  # one put-back recorded
    again = queue.parse_listing(sh(tmp_path, queue.listing_command(str(tmp_path)))).packs[PID]
    assert again.workers == {} and again.retry == {"b"} and again.queued == 2
    # a chunk unqueued, then queued again (a rerun's): it leaves gone
    assert sh(tmp_path, queue.enqueue_command(PID, ["a"])).split() == ["N", "a"]
    assert os.listdir(q / "gone") == [] and slot(q, 1) == ["5", "a"]


def test_the_worker_runs_each_chunk_once_as_a_one_chunk_job_would_and_exits_on_an_empty_queue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        make_chunk(tmp_path, f"c{i}", i)
    make_chunk(tmp_path, "killer", 9)
    sh(tmp_path, queue.enqueue_command(PID, ["c0", "c1", "c2", "killer"]))
    q = tmp_path / queue.queue_dir(PID)
    (q / "todo" / "killer").write_text("w7\nw8\nw9\n")  # three workers died running it
    home = q / "workers" / "w1"
    home.mkdir()
    monkeypatch.chdir(home)
    assert pack_worker.serve(q, max_time=3600, idle=0, worker="w1") == 3
    for i in range(3):
        outcome = pickle.loads(read_verified_result(tmp_path / f"c{i}"))
        assert outcome == ("return", i)
        assert (tmp_path / f"c{i}" / layout.STARTED).exists() and (tmp_path / f"c{i}" / layout.WORKER_LOG).exists()
    assert not (tmp_path / "killer" / layout.STARTED).exists()
    assert os.listdir(q / "todo") == [] and os.listdir(q / "taken") == []
    assert os.listdir(q / "gone") == ["killer"]  # the driver sees it leave the queue: died
    assert Path.cwd() == home


def test_pack_settings_are_checked_before_anything_is_submitted() -> None:
    assert effective_pack({"workers": 3}, None) == PackSetting(workers=3)
    assert effective_pack(None, "auto") == PackSetting(tuned=True, idle_seconds=TUNED_IDLE_SECONDS)
    assert effective_pack(False, {"workers": 2}) is None
    tuned = effective_pack({"target_chunk_seconds": 60, "walltime": "2h", "max_workers": 32}, None)
    assert tuned == PackSetting(workers=32, idle_seconds=TUNED_IDLE_SECONDS, tuned=True, target_chunk_seconds=60.0,
                                walltime=7200.0)
    for bad, named in (({"workers": 0}, "workers"), ({"worker": 8}, "'worker'"), ("sometimes", "sometimes"), (8, "8"),
                       ({"walltime": "soon"}, "walltime"), ({"max_workers": 4, "workers": 4}, "max_workers"),
                       ({"target_chunk_seconds": -1}, "target_chunk_seconds")):
        with pytest.raises(ConfigurationError, match="pack") as caught:
            JobOptions(pack=bad)
        assert named in str(caught.value)


def test_self_tuning_starts_small_then_sizes_tasks_from_measured_times() -> None:
    assert tuning.estimate([]) is None
    assert tuning.chunk_size(None, target_seconds=30, remaining=1000, workers=8, walltime=120) == 1
    few = tuning.estimate([(0.5, 1)] * 16)  # 16 configurations measured: tasks of two at most, whatever the mean
    assert few is not None and tuning.chunk_size(few, target_seconds=30, remaining=1000, workers=8, walltime=3600) == 2
    # fewer than TAIL_CONFIGURATIONS measured: the slowest of the next ones is not known, so a task may take
    # as long as a fresh worker has (the call stages it with longest_fitting)
    assert few.high == math.inf and few.predict(1) == math.inf
    found = tuning.estimate([(0.5, 1)] * 99 + [(20.0, 1)] + [(69.5, 100)] * 4)  # 500 measured
    assert found is not None and found.samples == 104 and found.configurations == 500
    assert found.high == 20.0  # the slowest configuration measured bounds the next ones
    # ... unless they are not a fair sample: finished while an earlier, slower one still runs
    assert tuning.estimate([(0.5, 1)] * 200, unbiased=77).high == math.inf  # type: ignore[union-attr]
    assert tuning.estimate([(0.5, 1)] * 200, unbiased=100).high == 0.5  # type: ignore[union-attr]
    assert tuning.chunk_size(found, target_seconds=30, remaining=500, workers=8, walltime=3600) == 500 // 16  # the end
    assert tuning.chunk_size(found, target_seconds=30, remaining=10_000, workers=8, walltime=3600) == 43  # 30 s of mean
    # a task stays short next to a worker's walltime: its configurations beyond the slowest take at most
    # WINDOW_FRACTION of what a worker has beyond its start and the slowest configuration
    size = tuning.chunk_size(found, target_seconds=1000, remaining=10_000, workers=1, walltime=120)
    spare = 120 - tuning.WORKER_START_SECONDS - tuning.fit_margin(20.0) - 20.0
    assert size == 1 + int(tuning.WINDOW_FRACTION * spare / found.mean)
    assert tuning.fits(found.predict(size), 120 - tuning.WORKER_START_SECONDS, 0, 30)
    # a slow configuration inside a chunk of ten is not averaged away: the chunk bounds it
    hidden = tuning.estimate([(5.0, 10)] * 9 + [(24.5, 10)])
    assert hidden is not None and hidden.high == pytest.approx(24.5 - 9 * hidden.mean) and hidden.high > 15
    tail = tuning.estimate([(0.5, 1)] * 90 + [(20.0, 1)] * 10)
    assert tail is not None and tail.predict(10) == pytest.approx(9 * tail.mean + 20.0)
    # what a fresh worker of 2 minutes takes when the tail is not known: it starts such a task only
    # within the first quarter of its walltime (its start included)
    assert tuning.fits(tuning.longest_fitting(120), 90, 0, 30)
    assert not tuning.fits(tuning.longest_fitting(120), 89, 0, 30)
    assert tuning.longest_fitting(45) == 45 - tuning.WORKER_START_SECONDS - tuning.MIN_FIT_MARGIN


def test_worker_walltime_fits_the_longest_task_and_its_share_of_the_backlog() -> None:
    assert tuning.worker_walltime(longest=100, backlog=0, workers=8, cap=7200) >= 100 + tuning.fit_margin(100)
    assert tuning.worker_walltime(longest=10, backlog=8000, workers=8, cap=600) == 600
    # whole minutes (Slurm rounds a time limit up to them), within the cap
    assert tuning.worker_walltime(longest=10, backlog=700, workers=8, cap=7200) == 120
    assert tuning.worker_walltime(longest=10, backlog=700, workers=8, cap=100) == 100
    assert tuning.workers_wanted(max_workers=8, backlog=1e6) == 8
    assert tuning.workers_wanted(max_workers=8, backlog=50) == 2  # near the end: fewer workers start


def test_a_worker_counts_its_time_left_from_its_jobs_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, predicted in (("first", "1"), ("task", "20")):
        make_chunk(tmp_path, name, 1)
        (tmp_path / name / layout.PREDICTED).write_text(f"{predicted}\n")
    sh(tmp_path, queue.enqueue_command(PID, ["first", "task"]))
    q = tmp_path / queue.queue_dir(PID)
    home = q / "workers" / "w1"
    home.mkdir()
    monkeypatch.chdir(home)
    # its job started 100 s ago (its Python started late, on a loaded node): 20 s of 120 are left;
    # its first task runs whatever is left (no worker has more than a fresh one), the next does not fit
    monkeypatch.setenv(layout.JOB_STARTED_ENV, str(int(time.time()) - 100))
    assert pack_worker.serve(q, max_time=120, idle=0, worker="w1") == 1
    assert (tmp_path / "first" / layout.SUCCEEDED).exists() and os.listdir(q / "retry") == ["task"]
    monkeypatch.delenv(layout.JOB_STARTED_ENV)  # no stamp: counted from the worker's own start
    assert pack_worker.serve(q, max_time=120, idle=0, worker="w2") == 1
    spec = JobScriptSpec(job_id="j", job_dir="/d", partition="p", num_nodes=1, num_cores=1, num_cores_per_node=1,
                         max_time=60)
    script = SlurmScheduler().render_script(spec).splitlines()
    assert script[script.index("") + 1] == f"export {layout.JOB_STARTED_ENV}=$(date +%s)"  # the first command


def test_a_worker_gives_back_a_task_that_does_not_fit_its_time_left_and_exits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_chunk(tmp_path, "short", 1)
    make_chunk(tmp_path, "long", 2)
    (tmp_path / "short" / layout.PREDICTED).write_text("1.0\n")
    (tmp_path / "long" / layout.PREDICTED).write_text("500\n")
    sh(tmp_path, queue.enqueue_command(PID, ["short", "long"]))
    q = tmp_path / queue.queue_dir(PID)
    home = q / "workers" / "w1"
    home.mkdir()
    monkeypatch.chdir(home)
    assert pack_worker.serve(q, max_time=120, idle=0, worker="w1") == 1  # ran the short one only
    assert pickle.loads(read_verified_result(tmp_path / "short")) == ("return", 1)
    assert not (tmp_path / "long" / layout.STARTED).exists()
    assert os.listdir(q / "retry") == ["long"] and os.listdir(q / "taken") == []  # given back, for a longer worker
    assert pack_worker.serve(q, max_time=700, idle=0, worker="w2") == 1
    assert pickle.loads(read_verified_result(tmp_path / "long")) == ("return", 2)


def test_pruning_gone_entries_removes_only_those_named_and_the_survey_no_longer_lists_them(tmp_path: Path) -> None:
    sh(tmp_path, queue.enqueue_command(PID, ["a", "b", "c"]))
    sh(tmp_path, queue.unqueue_command(PID, ["a", "b", "c"]))
    command = queue.prune_gone_command(PID, ["a", "c", "-rf"])  # a name that looks like an option is a name
    sh(tmp_path, command)
    sh(tmp_path, command)  # repeated after a dropped connection: nothing more happens
    pack = queue.parse_listing(sh(tmp_path, queue.listing_command(str(tmp_path)))).packs[PID]
    assert pack.gone == {"b"} and os.listdir(tmp_path / queue.queue_dir(PID) / "gone") == ["b"]
