"""What one run of the workload measured, whichever implementation ran it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PollFigures", "RunFigures"]


@dataclass
class PollFigures:
    """Remote commands per poll interval (from one status poll to the next)."""

    intervals: int
    max_commands: int
    mean_commands: float
    max_commands_after_submit: int
    """The same, counting only intervals that start once every job is submitted."""
    by_kind: dict[str, int]
    """Remote commands of each kind over the whole run: submit, poll, fetch, other."""


@dataclass
class RunFigures:
    """One implementation running N trivial jobs on one system."""

    implementation: str
    system: str
    jobs: int
    submit_all_s: float | None = None
    """From the first job created to every job's queue id known."""
    first_result_s: float | None = None
    all_results_s: float | None = None
    ok: int = 0
    failed: int = 0
    ssh_connections: int | None = None
    remote_commands: int | None = None
    """Commands run on the system (for ExPyRe: ssh processes, each running one command)."""
    scheduler_calls: int | None = None
    polls: int | None = None
    per_poll: PollFigures | None = None
    peak_rss_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float | None:
        if not self.all_results_s:
            return None
        return self.jobs / self.all_results_s

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["jobs_per_s"] = self.jobs_per_s
        return data
