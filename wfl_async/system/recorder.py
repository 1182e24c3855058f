"""What a system's loops report upward: a job submitted, jobs whose state moved.

The loops are given a :class:`Recorder` at construction (the session's records each report in
the jobs database); they never learn who listens. The submit loop reports a submission
itself, so a job whose caller was cancelled meanwhile is recorded too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..jobs.states import Verdict
from .requests import SubmitRequest, Watch

__all__ = ["NO_RECORDER", "Recorder"]


class Recorder(Protocol):
    """Where a system's loops report."""

    def submitted(self, requests: Sequence[SubmitRequest], root: str) -> None:
        """``requests``' jobs were accepted under remote root ``root`` (synchronous: called as their ids come;
        a whole enqueue command's chunks at once)."""

    async def progressed(self, changes: Sequence[tuple[Watch, Verdict]]) -> None:
        """One poll's (or one fetch's) jobs whose state moved, with their verdicts."""

    async def ended(self, job_dirs: Sequence[str]) -> set[str]:
        """Those of ``job_dirs`` recorded as never to run again (no run will watch them): their
        queue entries may go (packing prunes its ``gone`` entries by this)."""


class _NoRecorder:
    """Records nothing (a system used without a jobs database, e.g. in tests)."""

    def submitted(self, requests: Sequence[SubmitRequest], root: str) -> None:
        pass

    async def progressed(self, changes: Sequence[tuple[Watch, Verdict]]) -> None:
        pass

    async def ended(self, job_dirs: Sequence[str]) -> set[str]:
        return set()  # nothing recorded: nothing known to have ended


NO_RECORDER: Recorder = _NoRecorder()
