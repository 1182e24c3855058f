"""The live progress line: its counts, rate, ETA, and when it is shown."""

from __future__ import annotations

import pytest

from wfl_async.progress import CallCounts, Progress, progress_enabled


class FakeSystem:
    """A stand-in exposing the two counters a System exposes (a parser-level unit test)."""

    name = "cluster"

    def running_count(self) -> int:
        return 3

    def watched_count(self) -> int:
        return 5


def test_summary_counts_chunks_and_configurations() -> None:
    progress = Progress("cluster: relax", FakeSystem(), CallCounts(total_chunks=10, total_items=100), enabled=False)  # type: ignore[arg-type]
    progress.chunk_done(10)
    progress.chunk_done(10, failed=True)
    text = progress.summary()
    assert "queued 5 running 3 done 1 failed 1" in text
    assert "configs 10/100" in text
    assert progress.counts.eta() is not None and progress.counts.rate() > 0


def test_eta_is_unknown_before_the_first_result() -> None:
    assert CallCounts(total_chunks=2, total_items=20).eta() is None


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("1", True), ("no", False)])
def test_variable_forces_the_display_on_or_off(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("WFL_ASYNC_PROGRESS", value)
    assert progress_enabled() is expected


def test_display_is_off_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WFL_ASYNC_PROGRESS", raising=False)
    assert progress_enabled() is False  # pytest captures stderr: not a terminal


def test_enabled_display_adds_and_removes_its_line() -> None:
    progress = Progress("cluster: md", FakeSystem(), CallCounts(total_chunks=1, total_items=4), enabled=True)  # type: ignore[arg-type]
    with progress:
        assert progress._task is not None
        progress.chunk_done(4)
    assert progress._task is None
