"""Why a job that left the queue ended, in the scheduler's own words, and what to do about it.

The schedulers' accountings (``sacct``, ``qacct``, ``qstat -x``) each name the end differently;
:class:`EndCause` is the one vocabulary they are read into, so the poll loop, the job's error
message, the escalation after a kill (:mod:`wfl_async.jobs.escalation`) and the CLI speak of the
same few causes. This module imports nothing of the package: part of the floor data layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["EndCause", "Ending", "hms"]


class EndCause(StrEnum):
    """How a job without a final marker ended, as far as the scheduler's accounting says."""

    TIMEOUT = "timeout"
    """Killed at its time limit."""
    OUT_OF_MEMORY = "out_of_memory"
    """Killed (or its allocation refused) above its memory request."""
    NODE_FAIL = "node_fail"
    """Its node failed, or it could not be started there (boot failure)."""
    CANCELLED = "cancelled"
    """Cancelled by a user or an administrator (``scancel``, ``qdel``)."""
    PREEMPTED = "preempted"
    """Taken off its node for another job."""
    FAILED = "failed"
    """Ended some other way (its script's exit status, a signal)."""


_WHAT = {
    EndCause.TIMEOUT: "killed at its time limit{limit}",
    EndCause.OUT_OF_MEMORY: "killed for exceeding its memory request{memory}",
    EndCause.NODE_FAIL: "lost with its node (node failure)",
    EndCause.CANCELLED: "cancelled (by a user or an administrator)",
    EndCause.PREEMPTED: "preempted by another job",
    EndCause.FAILED: "ended by the scheduler without a final marker",
}
_FIX = {
    EndCause.TIMEOUT: "ask for more time (resources max_time) or give each job less work; escalation "
                      "(escalate=True, the default) splits a chunk or doubles the time up to the partition's limit",
    EndCause.OUT_OF_MEMORY: "ask for more memory (resources max_mem_tot or max_mem_per_core); escalation "
                            "(escalate=True, the default) doubles it up to the partition's max_mem",
    EndCause.NODE_FAIL: "rerun the workflow (resubmit_killed_jobs=True resubmits it once at once)",
    EndCause.CANCELLED: "rerun the workflow if the cancel was not meant",
    EndCause.PREEMPTED: "rerun the workflow, or use a partition without preemption",
    EndCause.FAILED: "look at the job's stderr and worker log ('wfl-async log')",
}


def hms(seconds: int) -> str:
    """``HH:MM:SS`` (``D-HH:MM:SS`` past a day), as the schedulers print time limits."""
    days, rest = divmod(int(seconds), 86400)
    text = f"{rest // 3600:02d}:{(rest // 60) % 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


@dataclass(frozen=True)
class Ending:
    """One job's end as its scheduler's accounting tells it."""

    cause: EndCause
    scheduler: str
    """The scheduler's name for it (``Slurm TIMEOUT``, ``SGE failed 37``), quoted in messages."""
    time_limit: int | None = None
    """Its time limit (s), where the accounting gives it."""
    memory: str = ""
    """Its memory request or peak as the accounting prints it (``1024M``), where it gives one."""

    def sentence(self) -> str:
        """``killed at its time limit 00:01:00 (Slurm TIMEOUT)``."""
        what = _WHAT[self.cause].format(limit=f" {hms(self.time_limit)}" if self.time_limit else "",
                                        memory=f" {self.memory}" if self.memory else "")
        return f"{what} ({self.scheduler})"

    def fix(self) -> str:
        return _FIX[self.cause]
