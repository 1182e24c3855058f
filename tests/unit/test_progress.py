"""The live progress line: per-call counts, rate, ETA, width handling, summary, and when it is shown."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from wfl_async import progress as progress_module
from wfl_async.cli._display import predicted_end_lines
from wfl_async.jobs.database import JobRecord, JobStatus
from wfl_async.progress import CallCounts, Progress, progress_enabled, unfinished_jobs


def test_summary_counts_this_calls_chunks_and_configurations() -> None:
    progress = Progress("cluster: relax", None, CallCounts(total_chunks=10, total_items=100), enabled=False,
                        running=lambda: 3)
    progress.chunk_done(10)
    progress.chunk_done(10, failed=True)
    text = progress.summary()
    assert "queued 5 running 3 done 1 failed 1" in text
    assert "configs 10/100" in text
    assert progress.counts.eta() is not None and progress.counts.rate() > 0


def test_a_packed_call_shows_its_workers_alive() -> None:
    alive = [8]
    progress = Progress("cluster: relax", None, CallCounts(total_chunks=200, total_items=2000), enabled=False,
                        running=lambda: 8, workers=lambda: alive[0])
    assert "queued 192 running 8 done 0 failed 0 | workers 8 | configs 0/2000" in progress.summary()
    alive[0] = 3
    assert "| workers 3 |" in progress.summary()
    assert "workers" not in Progress("x", None, CallCounts(1, 1), enabled=False).summary()


def test_summary_says_how_many_job_arrays_the_jobs_are_tasks_of() -> None:
    counts = CallCounts(total_chunks=10, total_items=10)
    assert "(in" not in Progress("c: x", None, counts, enabled=False).summary()
    assert "queued 10 running 0 done 0 failed 0 (in 2 job arrays) |" in Progress(
        "c: x", None, counts, enabled=False, arrays=lambda: 2).summary()


def test_counts_never_go_backwards() -> None:
    """queued only shrinks and running never exceeds the unfinished jobs, whatever the source says."""
    running = [0]
    progress = Progress("c: x", None, CallCounts(total_chunks=4, total_items=4), enabled=False,
                        running=lambda: running[0])
    queued = [progress.queued()]
    for value, finished in [(2, 0), (0, 1), (9, 1), (0, 1), (1, 0)]:
        running[0] = value
        for _ in range(finished):
            progress.chunk_done(1)
        queued.append(progress.queued())
        assert progress.running() <= 4 - progress.counts.done_chunks
    assert queued == sorted(queued, reverse=True)


def test_eta_is_unknown_before_the_first_result() -> None:
    assert CallCounts(total_chunks=2, total_items=20).eta() is None


def test_a_self_tuned_call_shows_the_time_to_its_end_predicted_from_measured_times() -> None:
    predicted: list[float | None] = [None]
    progress = Progress("c: tuned", None, CallCounts(total_chunks=16, total_items=500), enabled=False,
                        predicted_left=lambda: predicted[0])
    assert "ETA ?" in progress.summary()  # nothing measured, no result yet
    predicted[0] = 125.0
    assert progress.summary().endswith("ETA 125s") and "ETA 125s" in progress.compact(40)
    progress.chunks_added(4)  # planned as results come back
    assert progress.counts.total_chunks == 20 and progress.queued() == 20


def test_ls_predicts_each_unfinished_calls_end_from_its_measured_chunk_times() -> None:
    def record(name: str, status: JobStatus) -> JobRecord:
        return JobRecord(key=name, name=name, system="slurm", status=status, job_dir=name, remote_root=None,
                         remote_id=None, owner=None, created_at=0.0, updated_at=0.0, message=None)

    records = [record("relax_chunk_0", JobStatus.STARTED), record("relax_chunk_1", JobStatus.STARTED),
               record("relax_chunk_2", JobStatus.SUBMITTED), record("relax_chunk_3", JobStatus.SUCCEEDED),
               record("md_chunk_0", JobStatus.SUBMITTED)]
    lines = predicted_end_lines(records, {("relax", "slurm"): [(40.0, 4), (20.0, 2)]})
    # 3 unfinished chunks of 30 s on average, 2 running: 45 s
    assert lines == ["slurm: md: 1 unfinished job(s); no measured times yet",
                     "slurm: relax: 3 unfinished job(s), about 45s to the end (measured 30.0 s a chunk over 2 "
                     "chunk(s), 2 running)"]


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("1", True), ("no", False)])
def test_variable_forces_the_display_on_or_off(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("WFL_ASYNC_PROGRESS", value)
    assert progress_enabled() is expected


def test_display_is_off_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WFL_ASYNC_PROGRESS", raising=False)
    assert progress_enabled() is False  # pytest captures stderr: not a terminal


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    monkeypatch.setattr(progress_module, "_console", lambda: console)
    return console, out


def test_one_line_per_call_at_any_width_and_a_summary_when_it_ends(terminal: tuple[Console, io.StringIO]) -> None:
    console, out = terminal
    first = Progress("cluster: a_rather_long_job_name_for_relaxations", None,
                     CallCounts(total_chunks=3, total_items=30), enabled=True)
    second = Progress("other: md", None, CallCounts(total_chunks=1, total_items=4), enabled=True)
    with first, second:
        assert unfinished_jobs() == 4
        display = progress_module._shared["display"]
        for width in (30, 80, 250):  # a terminal resized, narrower and wider
            lines = console.render_lines(display.get_renderable(), console.options.update(width=width))
            assert len(lines) == 2
        second.chunk_done(4)
        first.chunk_done(10)
    assert unfinished_jobs() == 0
    text = out.getvalue()
    assert "other: md: 1 done, 0 failed of 1 jobs; configs 4/4" in text
    assert "1 done, 0 failed, 2 unfinished of 3 jobs; configs 10/30" in text
    assert progress_module._shared["display"] is None


def test_a_line_cut_to_the_terminal_keeps_done_total_and_the_eta() -> None:
    counts = CallCounts(total_chunks=200, total_items=2000, done_chunks=3, failed_chunks=1, done_items=30,
                        started_at=time.monotonic() - 30)  # 1 config/s: about 1970 s left
    progress = Progress("slurm: relax", None, counts, enabled=False, running=lambda: 8, workers=lambda: 4)
    assert len(progress.summary()) > 80  # the whole line, as before
    for width in (30, 45, 60, 80):
        line = progress.summary(width)
        assert len(line) <= width and line.startswith("done 3/200 failed 1 | ETA 19"), line
    assert progress.summary(45) == "done 3/200 failed 1 | ETA 1970s | running 8"
    assert progress.summary(1000) == progress.summary()
