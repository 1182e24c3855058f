"""Chunks killed with their worker at its time or memory limit: out of the pack, to be escalated.

A worker killed at its time limit (Slurm TIMEOUT, SGE ``h_rt``) or above its memory takes the
chunk it was running with it. Put back in the queue as it was, that chunk would be taken by a
worker like the one that died and killed again. So such a chunk leaves its pack (into ``gone``)
with its worker's cause, and its job is escalated as a job of its own is
(:mod:`wfl_async.jobs.escalation`, docs/escalation.md): split in two if it holds several
configurations, else rerun as a job of its own with twice the time or memory. The chunks of a
worker that died otherwise (node failure, a cancel, a cause the scheduler does not tell) are put
back, as before.

Why a worker ended comes from the scheduler's own listing when it still shows the worker ended
(Slurm lists a TIMEOUT for a few minutes, the local runner lists ``timeout``), else from its
accounting (:meth:`~wfl_async.system.machine.Machine.accounting`, one command for all dead
workers). Pure decisions here; the coordinator (:mod:`.coordinator`) runs the commands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from ..jobs.ended import EndCause, Ending
from ..jobs.states import QueueState
from ..scheduler.base import Accounted

__all__ = ["ACCOUNTING_LISTINGS", "LIMIT_CAUSES", "at_limit", "chunk_ending", "from_listing", "split_taken"]

LIMIT_CAUSES = frozenset({EndCause.TIMEOUT, EndCause.OUT_OF_MEMORY})
"""A worker's ends whose running chunk is escalated rather than put back."""
ACCOUNTING_LISTINGS = 5
"""Listings a dead worker's chunks wait for its accounting record (SGE's ``qacct`` lags a few
seconds behind the job's end) before they are put back without knowing why it ended."""


def from_listing(state: QueueState | None, scheduler: str, walltime: float) -> Accounted | None:
    """A dead worker's end as the scheduler's listing shows it: a TIMEOUT only (None: not shown)."""
    if state is not QueueState.TIMEOUT:
        return None
    limit = int(walltime) if walltime != float("inf") else None
    named = _SCHEDULER_NAMES.get(scheduler, scheduler)
    return Accounted(QueueState.TIMEOUT, ending=Ending(EndCause.TIMEOUT, f"{named} TIMEOUT", limit))


_SCHEDULER_NAMES = {"slurm": "Slurm", "sge": "SGE", "pbs": "PBS"}
"""As the accounting's messages spell them (``Slurm TIMEOUT``)."""


def at_limit(ended: Accounted | None) -> bool:
    """The worker was killed at its time or memory limit."""
    return ended is not None and ended.ending is not None and ended.ending.cause in LIMIT_CAUSES


def chunk_ending(worker_ended: Accounted, worker_id: str) -> Accounted:
    """How a chunk killed with its worker ended: the worker's end, naming the worker job."""
    assert worker_ended.ending is not None
    ending = replace(worker_ended.ending, scheduler=f"its worker job {worker_id}: {worker_ended.ending.scheduler}")
    state = QueueState.TIMEOUT if ending.cause is EndCause.TIMEOUT else QueueState.FAILED
    return replace(worker_ended, state=state, ending=ending, work_dir="")


def split_taken(taken: Sequence[tuple[str, str]], killed: Mapping[str, Accounted]) -> tuple[
        list[tuple[str, str]], list[tuple[str, str]]]:
    """``(job dir, worker)`` of taken chunks: those to put back, and those killed with their worker at a limit."""
    return [t for t in taken if t[1] not in killed], [t for t in taken if t[1] in killed]
