"""What the job layer hands the system: one job to stage and submit, one job to watch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._coalesce import Pending
from ..scheduler.states import QueueState

__all__ = ["JobOutcome", "QueueSurvey", "SubmitRequest", "Watch"]


@dataclass
class SubmitRequest(Pending):
    """A staged job directory waiting for the next submit batch."""

    job_dir: str
    """Directory name, the same under the local stage root and the remote root."""
    job_name: str
    partition: str
    node_dict: dict[str, int]
    max_time: int
    header_extra: Sequence[str]
    body: Sequence[str]
    """Job script lines after the system's own ``commands``."""
    upload: Sequence[str]
    """Paths relative to the local stage root to copy (the job's task and input files)."""
    reset: bool = False
    """Remove the job's remote directory first (a job created afresh after it failed or died)."""
    remote_id: str | None = None
    local_root: Path | None = None
    """The local stage root holding ``upload`` (set by the batcher)."""


@dataclass
class JobOutcome:
    """How a watched job ended, as the poller saw it."""

    marker: str | None
    """``succeeded``/``failed`` marker found, or None when the job died."""
    queue_state: QueueState | None = None
    message: str = ""


@dataclass
class Watch:
    """A submitted job the poller keeps an eye on."""

    job_dir: str
    remote_id: str | None
    fetch: Sequence[str]
    """Files (relative to the job directory) to bring back once it has a final marker."""
    local_root: Path
    check_interval: float
    key: str = ""
    outcome: JobOutcome | None = None
    started: bool = False
    missing_since: float | None = None


@dataclass
class QueueSurvey:
    """One system's answer, in one command, about the queue and a set of job directories."""

    states: dict[str, QueueState] | None
    """Remote id -> state of every job of the user the scheduler lists; None if it did not answer."""
    queue_output: str
    """What the status command printed (for error messages)."""
    markers: dict[str, str]
    """Job dir -> ``succeeded``/``failed``/``started`` for those holding a marker."""
