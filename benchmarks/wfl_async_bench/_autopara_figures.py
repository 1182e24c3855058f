"""What the autoparallelize benchmark measured: one run, one rerun, and the whole report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AutoparaReport", "AutoparaRun", "Rerun"]


@dataclass
class AutoparaRun:
    """One implementation evaluating the whole workload once."""

    implementation: str
    system: str
    setting: str
    """``WFL_NUM_PYTHON_SUBPROCESSES`` inside each job: a number, or ``default`` (cores per node)."""
    configs: int
    chunks: int
    first_written_s: float | None = None
    """From the call to the first configuration written to the output (a final marker, for the floor)."""
    end_to_end_s: float | None = None
    """From the call to its return with every output written (every final marker, for the floor)."""
    ok: int = 0
    """Configurations in the output with energy and forces (jobs with a success marker, for the floor)."""
    failed: int = 0
    submissions: int | None = None
    ssh_connections: int | None = None
    remote_commands: int | None = None
    scheduler_calls: int | None = None
    polls: int | None = None
    commands_per_poll: tuple[int, float] | None = None
    """Max over poll intervals after the last submission, and mean over all intervals."""
    energy_sum: float | None = None
    """Sum of the output's EMT energies: equal for every implementation that wrote outputs."""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def first_fraction(self) -> float | None:
        if self.first_written_s is None or not self.end_to_end_s:
            return None
        return self.first_written_s / self.end_to_end_s

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["first_fraction"] = self.first_fraction
        return data


@dataclass
class Rerun:
    """The same call made again after a run finished."""

    implementation: str
    system: str
    setting: str
    kind: str
    seconds: float | None = None
    submissions: int | None = None
    ssh_connections: int | None = None
    remote_commands: int | None = None
    ok: int = 0
    """Configurations in the output afterwards, with energy and forces."""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AutoparaReport:
    runs: list[AutoparaRun] = field(default_factory=list)
    reruns: list[Rerun] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    """Per setting: the figures the targets are about, each with its target and whether it is met."""
    command: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"command": self.command, "runs": [r.as_dict() for r in self.runs],
                "reruns": [r.as_dict() for r in self.reruns], "summary": self.summary}
