"""The pieces behind bounded commands and the queue window, run for real where they are shell text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import pytest

from wfl_async.jobs import layout
from wfl_async.jobs.states import QueueState
from wfl_async.scheduler.local import LocalScheduler
from wfl_async.system.commands import dir_list, marker_command, parse_event_log, parse_markers
from wfl_async.system.window import QueueWindow


def _sh(command: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> bytes:
    return subprocess.run(["/bin/sh", "-c", command], input=stdin, capture_output=True, check=True,
                          env=env).stdout


def test_markers_of_ten_thousand_directories_in_one_short_command(tmp_path: Path) -> None:
    dirs = [f"job-{i:05d}" for i in range(10_000)]
    for i, d in enumerate(dirs[:30]):
        (tmp_path / d).mkdir()
        (tmp_path / d / (layout.SUCCEEDED if i % 3 == 0 else layout.STARTED)).touch()
    command = marker_command(str(tmp_path))
    assert len(command) < 1000  # the names travel on stdin
    markers = parse_markers(_sh(command, dir_list(dirs)).decode(), str(tmp_path), "here")
    assert markers == {d: "succeeded" if i % 3 == 0 else "started" for i, d in enumerate(dirs[:30])}


def test_the_event_log_is_read_from_an_offset_and_a_partial_line_waits(tmp_path: Path) -> None:
    log = tmp_path / layout.EVENTS
    log.write_bytes(b"started a\nsucceeded a\nstarted b\nfail")  # the last line is being written
    first = parse_event_log(_sh(marker_command(str(tmp_path), events_from=None), b""))
    assert first is not None and first.size == log.stat().st_size and first.markers == {}
    read = parse_event_log(_sh(marker_command(str(tmp_path), events_from=0), b""))
    assert read is not None and read.markers == {"a": "succeeded", "b": "started"}
    assert read.consumed == len(b"started a\nsucceeded a\nstarted b\n")
    with log.open("ab") as handle:
        handle.write(b"ed b\n")
    again = parse_event_log(_sh(marker_command(str(tmp_path), events_from=read.consumed), b""))
    assert again is not None and again.markers == {"b": "failed"} and again.consumed == len(b"failed b\n")


def test_no_event_log_yet_reads_as_empty(tmp_path: Path) -> None:
    read = parse_event_log(_sh(marker_command(str(tmp_path), events_from=0), b""))
    assert read is not None and read.size == 0 and read.consumed == 0


def test_the_local_status_command_runs_no_program_per_job(tmp_path: Path) -> None:
    """With no PATH at all, only shell builtins can run: the listing must still be complete."""
    slots = tmp_path / "slots"
    (slots / "jobs").mkdir(parents=True)
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    try:
        ids = []
        for p in sleepers:
            start = Path(f"/proc/{p.pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
            ids.append(f"{p.pid}.{start}")
            (slots / "jobs" / ids[-1]).write_text(f"running\n{tmp_path}/d{len(ids)}\n")
        (slots / "jobs" / "999999.1").write_text("queued\n/nowhere\n")  # a job whose process is gone
        scheduler = LocalScheduler(slot_dir=str(slots))
        out = _sh(scheduler.status_command(), env={"PATH": "/nonexistent", "HOME": str(tmp_path)}).decode()
        states = scheduler.parse_status_output(out)
        assert sorted(states) == sorted(ids)
        found = scheduler.parse_find_output(_sh(scheduler.find_command(), env={"PATH": "/nonexistent"}).decode())
        assert found == {f"{tmp_path}/d{k + 1}": job_id for k, job_id in enumerate(ids)}
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


async def test_the_window_admits_no_more_than_its_limit_and_wakes_a_waiter() -> None:
    window = QueueWindow(2)
    assert window.try_admit("a") and window.try_admit("b")
    assert not window.try_admit("c") and window.full()
    assert window.try_admit("a")  # a key already held takes no more room
    admitted: list[str] = []

    async def admit(key: str) -> None:
        await window.admit(key)
        admitted.append(key)

    async with anyio.create_task_group() as tg:
        tg.start_soon(admit, "c")
        await anyio.sleep(0.05)
        assert admitted == []
        window.left(["a"])
    assert admitted == ["c"] and window.peak == 2


def test_a_job_found_in_the_queue_counts_past_the_limit() -> None:
    window = QueueWindow(1)
    assert window.try_admit("a")
    window.queued("earlier-run")  # re-attached: it is in the queue already
    assert window.used == 2 and window.peak == 2 and not window.try_admit("b")


def test_a_finished_job_keeps_its_room_until_a_listing_no_longer_has_it_active() -> None:
    window = QueueWindow(2)
    assert window.try_admit("a") and window.try_admit("b")
    window.ended("a", "101")
    assert window.full() and window.leaving()
    window.listed(None)  # the scheduler did not answer: nothing is known to have left
    window.listed({"101": QueueState.RUNNING})  # still running its last lines
    assert window.full()
    window.listed({"101": QueueState.FINISHED})
    assert not window.full() and not window.leaving() and window.used == 1


def test_without_a_limit_or_an_id_a_finished_job_leaves_at_once() -> None:
    unlimited = QueueWindow(None)
    assert unlimited.try_admit("a")
    unlimited.ended("a", "7")
    assert unlimited.used == 0 and not unlimited.leaving()
    window = QueueWindow(3)
    assert window.try_admit("a")
    window.ended("a", "")  # "": an earlier submission ran it (no queue id to look for)
    window.ended("never-held", "8")  # a packed chunk: it took no room, and holds none
    assert window.used == 0 and not window.leaving()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_a_bad_window_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="max_queued_jobs"):
        QueueWindow(bad)  # type: ignore[arg-type]


def test_the_marker_scan_runs_no_program_per_job(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / layout.FAILED).touch()
    out = _sh(marker_command(str(tmp_path)), dir_list(["x", "y"]), env={"PATH": "/nonexistent"})
    assert parse_markers(out.decode(), str(tmp_path), "here") == {"x": "failed"}
