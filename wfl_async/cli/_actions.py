"""What ``sync``, ``cancel``, ``clean`` and ``rm`` do, as coroutines over a :class:`Session`.

Each groups the selected jobs by system and remote root and sends one command (or one
stream) per group, concurrently across groups; every status change is then written in
one database transaction. A failure on one system is reported and does not stop the others.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ..errors import WflAsyncError
from ..jobs.database import JobRecord
from ..jobs.fetched import bundles, unwanted_bundles
from ..jobs.owner import owner_alive
from ..jobs.run_record import read_run_record
from ..jobs.states import JobStatus, Marker, Verdict, VerdictKind, status_update
from ..pack.control import cancel_packed
from ..session import Session
from ._survey import recheck_markers, survey

__all__ = ["Change", "Report", "cancel_jobs", "clean_jobs", "remove_jobs", "sync_jobs"]

CANCELLED = "cancelled by user"


@dataclass
class Change:
    """A job whose status this command changed."""

    record: JobRecord
    status: JobStatus
    message: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    """When and where it ran, from its fetched markers (:func:`~wfl_async.jobs.run_record.read_run_record`)."""

    def update(self) -> tuple[str, dict[str, Any]]:
        values: dict[str, Any] = {**self.run, "status": self.status}
        if self.message is not None:
            values["message"] = self.message
        return self.record.key, values


@dataclass
class Report:
    """The outcome of one command: changes, jobs left as they were (with why), errors."""

    changes: list[Change] = field(default_factory=list)
    unchanged: list[tuple[JobRecord, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    removed: list[JobRecord] = field(default_factory=list)


def _groups(records: Sequence[JobRecord], report: Report) -> dict[tuple[str, str], list[JobRecord]]:
    groups: dict[tuple[str, str], list[JobRecord]] = {}
    for record in records:
        if record.remote_root is None:
            report.unchanged.append((record, "no remote directory recorded (never submitted)"))
        else:
            groups.setdefault((record.system, record.remote_root), []).append(record)
    return groups


# ---------------------------------------------------------------------- sync / cancel
async def sync_jobs(session: Session, records: Sequence[JobRecord], *, cancel: bool = False) -> Report:
    """Bring submitted/started jobs up to date with their systems; ``cancel`` also cancels the live ones.

    Jobs with a final marker become succeeded/failed (their directory is fetched into the stage
    directory, so a rerun returns the result without contacting the system); jobs gone from the
    queue without one become died; with ``cancel``, jobs still queued or running are cancelled with
    one scheduler command per system and become cancelled (a workflow waiting for them raises
    :class:`~wfl_async.errors.JobCancelledError`, never a death to resubmit).
    """
    report = Report()
    async with anyio.create_task_group() as tg:
        for (name, root), group in _groups(records, report).items():
            tg.start_soon(_sync_group, session, name, root, group, cancel, report)
    await session.db.update_many(change.update() for change in report.changes)
    return report


async def _sync_group(session: Session, name: str, root: str, group: list[JobRecord], cancel: bool,
                      report: Report) -> None:
    try:
        system = session.system(name)
        found = await survey(system, root, group)
        if cancel and found.active:
            # recorded first: a workflow waiting for these jobs sees them leave the queue as cancelled
            # by the user, never as died; put back if the scheduler refuses
            await session.db.update_many((r.key, {"status": JobStatus.CANCELLED, "message": CANCELLED})
                                         for r in found.active)
            try:
                # packed chunks leave their pack's queue; the others are cancelled by the scheduler
                scheduler_ids = await cancel_packed(system, root, [r for r in found.active if r.remote_id])
                await system.control("cancel", scheduler_ids)
            except WflAsyncError:
                await session.db.update_many((r.key, {"status": r.status, "message": r.message})
                                             for r in found.active)
                raise
            report.changes.extend(Change(r, JobStatus.CANCELLED, CANCELLED) for r in found.active)
            found.active, found.started = [], []
        await recheck_markers(system, root, found)
        if found.finished:
            await system.transport.download(root, [r.job_dir for r, _ in found.finished], session.stage_root)
    except WflAsyncError as exc:
        report.errors.append(f"{name}: {exc}")
        report.unchanged.extend((r, f"left as it was (see the error for {name})") for r in group)
        return
    for record, marker in found.finished:
        update = status_update(Verdict(VerdictKind.FINISHED, Marker(marker)))
        assert update is not None
        run = {**read_run_record(session.stage_root / record.job_dir), "fetched_at": time.time()}
        report.changes.append(Change(record, update["status"], run=run))
    for record in found.missing:
        message = (f"{CANCELLED} (it had already left the queue without a final marker)" if cancel else
                   f"job {record.remote_id} left the queue of {name} without a final marker (seen by wfl-async sync)")
        report.changes.append(Change(record, JobStatus.DIED, message))
    started = {r.key for r in found.started}
    for record in found.active:
        state = found.states.get(record.remote_id or "")
        if record.key in started and record.status is JobStatus.SUBMITTED:
            report.changes.append(Change(record, JobStatus.STARTED))
        else:
            report.unchanged.append((record, f"{state.value if state else 'listed'} in the queue"))


async def cancel_jobs(session: Session, records: Sequence[JobRecord]) -> Report:
    """Cancel unfinished jobs (see :func:`sync_jobs`); ``created`` ones are handled without the system.

    A ``created`` job whose submitting process is gone is marked cancelled; one whose submitter is
    alive is left alone (it is being submitted right now: cancel again in a moment).
    """
    queued = [r for r in records if r.status is not JobStatus.CREATED]
    report = await sync_jobs(session, queued, cancel=True) if queued else Report()
    abandoned = []
    for record in records:
        if record.status is not JobStatus.CREATED:
            continue
        if owner_alive(record.owner):
            report.unchanged.append((record, f"being submitted by {record.owner}; run cancel again in a moment"))
        else:
            abandoned.append(Change(record, JobStatus.CANCELLED, f"{CANCELLED} (its submitter had gone)"))
    await session.db.update_many(change.update() for change in abandoned)
    report.changes.extend(abandoned)
    return report


# ---------------------------------------------------------------------- clean / rm
def _safe_dir(job_dir: str) -> bool:
    return bool(job_dir) and "/" not in job_dir and job_dir not in (".", "..")


async def _remove_remote(session: Session, records: Sequence[JobRecord], report: Report) -> list[JobRecord]:
    """Delete remote job directories, one command per system and root; return the records done."""
    done: list[JobRecord] = []

    async def one(name: str, root: str, group: list[JobRecord]) -> None:
        try:
            await session.system(name).remove_dirs([r.job_dir for r in group], root)
        except WflAsyncError as exc:
            report.errors.append(f"{name}: removing job directories under {root} failed: {exc}. Fix the "
                                 f"connection and retry, or pass --no-remote to leave them there.")
            return
        done.extend(group)

    bad = [r for r in records if not _safe_dir(r.job_dir)]
    for record in bad:
        report.errors.append(f"job {record.key[:12]} has a suspicious job_dir {record.job_dir!r}; not touching it. "
                             f"Remove its row with 'wfl-async rm --no-remote --id {record.key[:12]}'.")
    report_unsubmitted = Report()
    groups = _groups([r for r in records if _safe_dir(r.job_dir)], report_unsubmitted)
    done.extend(r for r, _ in report_unsubmitted.unchanged)  # nothing remote to remove
    async with anyio.create_task_group() as tg:
        for (name, root), group in groups.items():
            tg.start_soon(one, name, root, group)
    return done


def _remove_local(stage_root: Path, job_dirs: Sequence[str]) -> None:
    for job_dir in job_dirs:
        if _safe_dir(job_dir):
            shutil.rmtree(stage_root / job_dir, ignore_errors=True)


async def _remove_bundles(session: Session, removed: set[str]) -> None:
    """Delete the fetched bundles (:mod:`~wfl_async.jobs.fetched`) holding jobs of ``removed`` and no job that
    keeps its local copy: one recorded and not cleaned, other than those."""
    held = await anyio.to_thread.run_sync(bundles, session.stage_root)
    others = sorted({d for job_dirs in held.values() if job_dirs & removed for d in job_dirs} - removed)
    kept = {d for d, status in (await session.db.statuses(others)).items() if status is not JobStatus.CLEANED}
    for path in unwanted_bundles(held, removed, kept):
        path.unlink(missing_ok=True)


async def clean_jobs(session: Session, records: Sequence[JobRecord], *, remote: bool = True) -> Report:
    """Remove finished jobs' directories; with ``remote`` also on their systems, and mark them cleaned.

    Without ``remote`` only the local copies go and the statuses stay: a rerun re-attaches to
    the job and fetches its result again. A fetched bundle goes once none of its jobs keeps its
    local copy (one holding a job still kept stays whole: a rerun of the cleaned ones may find them there).
    """
    report = Report()
    done = await _remove_remote(session, records, report) if remote else list(records)
    await anyio.to_thread.run_sync(_remove_local, session.stage_root, [r.job_dir for r in done])
    if remote:
        report.changes.extend(Change(r, JobStatus.CLEANED) for r in done if r.status is not JobStatus.CLEANED)
        await session.db.update_many(change.update() for change in report.changes)
    else:
        report.unchanged.extend((r, "local copy removed") for r in done)
    await _remove_bundles(session, {r.job_dir for r in done})
    return report


async def remove_jobs(session: Session, records: Sequence[JobRecord], *, remote: bool = True) -> Report:
    """Delete jobs' directories (local, and remote with ``remote``) and their database rows."""
    report = Report()
    done = await _remove_remote(session, records, report) if remote else list(records)
    await anyio.to_thread.run_sync(_remove_local, session.stage_root, [r.job_dir for r in done])
    await session.db.delete([r.key for r in done])
    await _remove_bundles(session, {r.job_dir for r in done})
    report.removed.extend(done)
    return report
