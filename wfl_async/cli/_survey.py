"""Ask one system, in one command, what became of many jobs.

The command is the poll loop's: the scheduler's list of the user's jobs, then for each job
directory which marker it holds. Run from the command line there is no previous poll to
compare with, so a job missing from the queue without a final marker is looked at once
more after a short pause (shared filesystems lag) before it is called died.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from ..errors import WflAsyncError
from ..jobs.database import JobRecord
from ..jobs.states import QueueState, VerdictKind, classify
from ..system import System

__all__ = ["Survey", "survey", "recheck_markers"]

RECHECK_DELAY_MAX = 5.0
"""Longest pause (s) before the second look at jobs missing from the queue."""


@dataclass
class Survey:
    """One system's answer about a group of jobs sharing a remote root."""

    finished: list[tuple[JobRecord, str]] = field(default_factory=list)
    """Jobs with a final marker, and the marker (``succeeded``/``failed``)."""
    active: list[JobRecord] = field(default_factory=list)
    """Jobs the scheduler still lists as queued, held or running."""
    started: list[JobRecord] = field(default_factory=list)
    """Active jobs whose worker has started."""
    missing: list[JobRecord] = field(default_factory=list)
    """Jobs gone from the queue (or ended there) without a final marker."""
    states: Mapping[str, QueueState] = field(default_factory=dict)


async def survey(system: System, root: str, records: Sequence[JobRecord]) -> Survey:
    """Classify ``records`` (all under ``root`` on ``system``) with one remote command.

    :raises WflAsyncError: the command could not run, the scheduler did not answer, or ``root`` is gone
    """
    answer = await system.survey([r.job_dir for r in records], root)
    if answer.states is None:
        raise WflAsyncError(f"{system.name}: the scheduler's status command failed "
                            f"({answer.queue_output.strip()[-300:]!r}); check the scheduler on "
                            f"{system.transport.where} and the system's pre_submit_cmds, then retry")
    found = Survey(states=answer.states)
    for record in records:
        verdict = classify(remote_id=record.remote_id, marker=answer.markers.get(record.job_dir),
                           states=answer.states, missing_for=None, grace=0.0, where=system.name)
        if verdict.kind is VerdictKind.FINISHED:
            assert verdict.marker is not None
            found.finished.append((record, verdict.marker.value))
        elif verdict.kind is VerdictKind.ACTIVE:
            found.active.append(record)
            if verdict.started:
                found.started.append(record)
        else:
            found.missing.append(record)
    return found


async def recheck_markers(system: System, root: str, found: Survey) -> None:
    """Look again, after a pause, for final markers of the jobs missing from the queue."""
    if not found.missing:
        return
    await anyio.sleep(min(system.config.died_grace_seconds, RECHECK_DELAY_MAX))
    markers = await system.markers([r.job_dir for r in found.missing], root)
    still = []
    for record in found.missing:
        verdict = classify(remote_id=record.remote_id, marker=markers.get(record.job_dir), states=found.states,
                           missing_for=math.inf, grace=0.0, where=system.name)
        if verdict.kind is VerdictKind.FINISHED:
            assert verdict.marker is not None
            found.finished.append((record, verdict.marker.value))
        else:
            still.append(record)
    found.missing = still
