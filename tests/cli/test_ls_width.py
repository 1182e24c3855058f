"""``wfl-async ls`` and ``status`` at 80 and 120 columns with a job in every state a run can leave
now: escalated, moved (and moving), packed, array tasks, cancelled, never submitted. Every line
fits, the footer included (it names more states, and moves, than it used to).

The jobs are recorded in a real jobs database (no job ran: the tables are what is under test; the
same columns from a real Slurm run are checked in tests/remote/test_report.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.helpers.recorded_jobs import recorded_project
from wfl_async.cli import main
from wfl_async.jobs.database import JobStatus
from wfl_async.jobs.escalation import Escalation

PACK = "pack:d5370cb4d86a69aa:relax_packed_chunk_{i}-1a60ec37823d22cb3199"
JOBS: list[tuple[str, str, dict[str, Any]]] = [
    ("relax_array_chunk_0", "slurm_ssh", {"status": JobStatus.PROCESSED, "remote_id": "60922_0"}),
    ("relax_array_chunk_1", "slurm_ssh", {"status": JobStatus.FAILED, "remote_id": "60922_1",
                                          "message": "ValueError: bad configuration 1"}),
    ("relax_array_chunk_2", "slurm_ssh", {"status": JobStatus.STARTED, "remote_id": "61614",
                                          "escalation": Escalation(max_time=120, tried=("time limit 00:01:00 -> "
                                                                   "00:02:00 after a TIMEOUT",)).to_json()}),
    ("relax_array_chunk_3", "slurm", {"status": JobStatus.SUBMITTED, "remote_id": "7001", "moved_from": "slurm_ssh",
                                      "move_reason": "slurm_ssh started nothing for 30 s"}),
    ("relax_array_chunk_4", "slurm_ssh", {"status": JobStatus.SUBMITTED, "remote_id": "60922_4", "moved_to": "slurm"}),
    ("relax_packed_chunk_0", "slurm_ssh", {"status": JobStatus.SUCCEEDED, "remote_id": PACK.format(i=0),
                                           "route": "packed", "pack_id": "d5370cb4d86a69aa"}),
    ("relax_packed_chunk_1", "slurm_ssh", {"status": JobStatus.DIED, "remote_id": PACK.format(i=1),
                                           "route": "packed", "pack_id": "d5370cb4d86a69aa",
                                           "end_cause": "out_of_memory"}),
    ("a_rather_long_operation_name_for_a_call_chunk_12", "slurm_ssh", {"status": JobStatus.CANCELLED,
                                                                        "remote_id": "62098"}),
    ("relax_unsent_chunk_0", "slurm_broken", {"status": JobStatus.NOT_SUBMITTED}),
    ("relax_unsent_chunk_1", "slurm_broken", {"status": JobStatus.RERUN}),
    ("relax_created_chunk_0", "slurm_ssh", {}),
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return recorded_project(tmp_path, monkeypatch, JOBS)


@pytest.mark.parametrize("width", [80, 120])
def test_every_line_of_ls_and_status_fits_the_terminal(project: Path, width: int) -> None:
    runner = CliRunner()
    shown = runner.invoke(main, ["ls"], env={"COLUMNS": str(width)}, catch_exceptions=False)
    lines = shown.stdout.splitlines()
    assert shown.exit_code == 0 and all(len(line) <= width for line in lines), shown.stdout
    assert lines[0].split()[:4] == ["NAME", "STATUS", "ID", "RUN"]
    assert len([line for line in lines if line.startswith(("relax_", "a_rather"))]) == len(JOBS)
    assert any(line.startswith("relax_u") and line.split()[1] == "not_submitted" for line in lines)
    assert any(line.startswith("relax_array_chunk_3 ") and " slurm_ssh→slurm " in f"{line} " for line in lines)
    assert any("…" in line and line.split()[0].endswith("chunk_12") for line in lines)  # shortened mid-name
    footer = " ".join(line.strip() for line in lines[len(JOBS) + 1:])
    assert footer.startswith(f"{len(JOBS)} job(s): ") and "1 not_submitted" in footer and "1 cancelled" in footer
    assert "1 moved to another system" in footer, footer
    status = runner.invoke(main, ["status"], env={"COLUMNS": str(width)}, catch_exceptions=False)
    assert status.exit_code == 0 and all(len(line.rstrip()) <= width for line in status.stdout.splitlines()), \
        status.stdout


def test_piped_ls_keeps_every_column_and_each_sentence_on_one_line(project: Path) -> None:
    # piped: no COLUMNS (CI's shell may export one) and no terminal
    shown = CliRunner().invoke(main, ["ls"], env={"COLUMNS": ""}, catch_exceptions=False).stdout.splitlines()
    assert shown[0].split() == ["NAME", "STATUS", "ID", "RUN", "ESCALATED", "SYSTEM", "UPDATED", "AGE", "JOB", "DIR"]
    assert shown[len(JOBS) + 1].startswith(f"{len(JOBS)} job(s): ") and "moved to another system" in shown[len(JOBS) + 1]
