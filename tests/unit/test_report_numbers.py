"""The run report's numbers (pure functions over job records): definitions checked on hand-made runs."""

from __future__ import annotations

import math

import pytest

from wfl_async.jobs.database import JobRecord
from wfl_async.jobs.states import JobStatus
from wfl_async.report import build_report, select_runs, summary_lines

T0 = 1_700_000_000.0


def record(name: str, status: JobStatus, *, submitted: float | None = 0, started: float | None = 10,
           finished: float | None = 70, fetched: float | None = 72, worker: str = "node1", cores: int = 2,
           max_time: float = 600, message: str | None = None, system: str = "slurm") -> JobRecord:
    def at(t: float | None) -> float | None:
        return None if t is None else T0 + t
    return JobRecord(key=name, name=name, system=system, status=status, job_dir=name, remote_root="/r",
                     remote_id="1", owner="me", created_at=T0 - 1, updated_at=at(fetched or finished or 80) or T0,
                     message=message, submitted_at=at(submitted), started_at=at(started), finished_at=at(finished),
                     fetched_at=at(fetched), worker=worker, cores=cores, max_time=max_time)


def test_phases_core_hours_and_failures_of_a_finished_run() -> None:
    records = [
        record("relax_chunk_0", JobStatus.SUCCEEDED),
        record("relax_chunk_1", JobStatus.SUCCEEDED, submitted=0, started=30, finished=90, fetched=95),
        record("relax_chunk_2", JobStatus.FAILED, message="ValueError: bad cell 3"),
        record("relax_chunk_3", JobStatus.FAILED, message="ValueError: bad cell 7"),
        record("relax_chunk_4", JobStatus.CANCELLED, finished=None, fetched=None, message="cancelled by user"),
        record("other", JobStatus.SUCCEEDED),
    ]
    report = build_report(select_runs(records, ["relax"]), {}, now=T0 + 1000)
    assert report.jobs == 5 and not report.in_progress
    assert report.by_status == {"succeeded": 2, "failed": 2, "cancelled": 1}
    assert report.queue_wait.max == pytest.approx(30) and report.queue_wait.median == pytest.approx(10)
    assert report.run_time.count == 4 and report.run_time.median == pytest.approx(60)
    ch = report.core_hours
    assert ch.used == pytest.approx(2 * 120 / 3600)
    assert ch.wasted_failed == pytest.approx(2 * 120 / 3600)
    assert ch.wasted_killed == pytest.approx(2 * 70 / 3600)  # started at 10, cancelled (recorded) at 80
    assert ch.requested == pytest.approx(5 * 2 * 600 / 3600)
    assert [(f.status, f.cause, f.count) for f in report.failures] == [("failed", "ValueError", 2),
                                                                         ("cancelled", "cancelled by user", 1)]
    text = summary_lines(report, "relax")
    assert text[0].startswith("relax: 5 job(s): 2 succeeded, 2 failed, 1 cancelled; on slurm (5)")
    assert "2 failed: ValueError (e.g. relax_chunk_2: ValueError: bad cell 3)" in text


def test_packed_workers_idle_time_and_tail() -> None:
    records = [record("p_chunk_0", JobStatus.SUCCEEDED, started=0, finished=50, worker="n1/w1"),
               record("p_chunk_1", JobStatus.SUCCEEDED, started=60, finished=100, worker="n1/w1"),
               record("p_chunk_2", JobStatus.SUCCEEDED, started=0, finished=40, worker="n2/w2")]
    report = build_report(records, {}, now=T0 + 1000)
    use = {w.worker: w for w in report.workers}
    assert use["n1/w1"].busy_seconds == pytest.approx(90) and use["n1/w1"].span_seconds == pytest.approx(100)
    assert use["n2/w2"].utilisation == pytest.approx(1.0)
    assert report.core_hours.wasted_idle == pytest.approx(2 * 10 / 3600)
    assert report.core_hours.requested == pytest.approx(2 * 2 * 600 / 3600)  # per worker, not per chunk
    assert report.idle_tail_seconds == {"slurm": pytest.approx(60)}  # w2 out of work at 40, the last ended at 100


def test_a_run_in_progress_is_measured_up_to_now() -> None:
    records = [record("q", JobStatus.SUBMITTED, started=None, finished=None, fetched=None),
               record("r", JobStatus.STARTED, started=20, finished=None, fetched=None)]
    report = build_report(records, {}, now=T0 + 100)
    assert report.in_progress and "(in progress)" in summary_lines(report)[0]
    running = {s.name: s for s in report.spans}
    assert running["r"].run_time == pytest.approx(80) and running["q"].queue_wait is None
    assert math.isclose(report.wall_seconds, 101)


def test_costs_are_added_up_over_sessions() -> None:
    costs = {"a": {"systems": {"slurm": {"scheduler_calls": 3}}, "transports": {"h": {"commands": 10, "poll": 4}}},
             "b": {"systems": {"slurm": {"scheduler_calls": 2}}, "transports": {"h": {"commands": 5}}}}
    report = build_report([record("x", JobStatus.SUCCEEDED)], costs, now=T0 + 100)
    assert report.costs["systems"]["slurm"]["scheduler_calls"] == 5
    assert report.costs["transports"]["h"] == {"commands": 15, "poll": 4}
    assert summary_lines(report)[-1] == "cost 5 scheduler call(s), 15 remote command(s)"


def test_a_never_submitted_jobs_example_says_why_the_system_could_not_run_it() -> None:
    """The first-submission check's message is a heading line, then the reason: the example keeps the
    reason (the heading alone said nothing a user could act on), and the summary says the heading once."""
    message = ("system 'cluster' cannot run jobs; nothing was submitted:\n  error: system 'cluster': python3 did "
               "not run (exit status 1: ModuleNotFoundError: No module named 'wfl_async'). Fix: ...")
    records = [record(f"r_chunk_{i}", JobStatus.NOT_SUBMITTED, submitted=None, started=None, finished=None,
                      fetched=None, message=message) for i in range(2)]
    report = build_report(records, {}, now=T0 + 10)
    (failure,) = report.failures
    assert failure.cause == "system 'cluster' cannot run jobs; nothing was submitted:" and failure.count == 2
    assert "No module named 'wfl_async'" in failure.example_message
    assert ("2 not_submitted: system 'cluster' cannot run jobs; nothing was submitted: (e.g. r_chunk_0: error: "
            "system 'cluster': python3 did not run") in summary_lines(report)[2]
