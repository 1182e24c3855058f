"""Ask one system, in one command, what became of many jobs.

The command is the poller's: the scheduler's list of the user's jobs, then for each job
directory which marker it holds. Run from the command line there is no previous poll to
compare with, so a job missing from the queue without a final marker is looked at once
more after a short pause (shared filesystems lag) before it is called died.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from ..errors import WflAsyncError
from ..jobs import layout
from ..jobs.database import JobRecord
from ..scheduler.states import ACTIVE_STATES, QueueState
from ..system import System

__all__ = ["Survey", "survey", "recheck_markers"]

_QUEUE_END = "@@wfl_async_queue_rc@@"
_ROOT_OK = "@@wfl_async_root_ok@@"
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
    states: dict[str, QueueState] = field(default_factory=dict)


def _marker_loop(root: str, job_dirs: Sequence[str]) -> str:
    dirs = " ".join(shlex.quote(d) for d in job_dirs)
    return (f"cd {shlex.quote(root)} && echo {_ROOT_OK} && for d in {dirs}; do "
            f'if [ -e "$d/{layout.SUCCEEDED}" ]; then echo "succeeded $d"; '
            f'elif [ -e "$d/{layout.FAILED}" ]; then echo "failed $d"; '
            f'elif [ -e "$d/{layout.STARTED}" ]; then echo "started $d"; fi; done')


def _parse_markers(text: str, root: str, where: str) -> dict[str, str]:
    lines = text.splitlines()
    if _ROOT_OK not in lines:
        raise WflAsyncError(f"{where}: cannot enter the remote job root {root!r}; if it was moved or deleted, "
                            f"the jobs there are lost: remove them with 'wfl-async rm --id ...'")
    markers = {}
    for line in lines:
        state, _, job_dir = line.partition(" ")
        if job_dir:
            markers[job_dir] = state
    return markers


async def survey(system: System, root: str, records: Sequence[JobRecord]) -> Survey:
    """Classify ``records`` (all under ``root`` on ``system``) with one remote command.

    :raises WflAsyncError: the command could not run, the scheduler did not answer, or ``root`` is gone
    """
    prefix = "".join(f"{cmd} && " for cmd in system.config.pre_submit_cmds)
    command = (f"( {prefix}{system.scheduler.status_command()} ) 2>&1; echo \"{_QUEUE_END} $?\"; "
               f"{_marker_loop(root, [r.job_dir for r in records])}")
    system.stats["scheduler_calls"] += 1
    result = await system.transport.run(command, check=False)
    queue_text, _, rest = result.stdout.decode(errors="replace").partition(_QUEUE_END)
    status_rc, _, marker_text = rest.partition("\n")
    if status_rc.strip() != "0":
        raise WflAsyncError(f"{system.name}: the scheduler's status command failed ({queue_text.strip()[-300:]!r}); "
                            f"check the scheduler on {system.transport.where} and the system's pre_submit_cmds, "
                            f"then retry")
    states = system.scheduler.parse_status_output(queue_text)
    markers = _parse_markers(marker_text, root, system.name)
    found = Survey(states=states)
    for record in records:
        marker = markers.get(record.job_dir)
        if marker in ("succeeded", "failed"):
            found.finished.append((record, marker))
        elif states.get(record.remote_id or "") in ACTIVE_STATES:
            found.active.append(record)
            if marker == "started":
                found.started.append(record)
        else:
            found.missing.append(record)
    return found


async def recheck_markers(system: System, root: str, found: Survey) -> None:
    """Look again, after a pause, for final markers of the jobs missing from the queue."""
    if not found.missing:
        return
    await anyio.sleep(min(system.config.died_grace_seconds, RECHECK_DELAY_MAX))
    result = await system.transport.run(_marker_loop(root, [r.job_dir for r in found.missing]))
    markers = _parse_markers(result.stdout.decode(errors="replace"), root, system.name)
    still = []
    for record in found.missing:
        marker = markers.get(record.job_dir)
        if marker in ("succeeded", "failed"):
            found.finished.append((record, marker))
        else:
            still.append(record)
    found.missing = still
