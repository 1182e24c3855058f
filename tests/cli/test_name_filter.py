"""``-n``/``-S`` match whole names, as ExPyRe's ``xpr`` does (``re.search('^' + regexp + '$')``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.recorded_jobs import recorded_project
from wfl_async.cli import main
from wfl_async.jobs.database import JobStatus

NAMES = ["relax", "relax_2", "prerelax", "md"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose database holds four finished jobs on two systems (no job ran: nothing remote)."""
    return recorded_project(tmp_path, monkeypatch, [(name, "slurm" if i % 2 == 0 else "slurm_ssh",
                                                     {"status": JobStatus.SUCCEEDED}) for i, name in enumerate(NAMES)])


def names(*args: str) -> list[str]:
    result = CliRunner().invoke(main, ["ls", "--json", *args], catch_exceptions=False)
    import json

    return sorted(r["name"] for r in json.loads(result.stdout))


def test_name_matches_the_whole_name(project: Path) -> None:
    assert names("-n", "relax") == ["relax"]
    assert names("-n", "relax.*") == ["relax", "relax_2"]
    assert names("-n", ".*relax") == ["prerelax", "relax"]
    assert names("-n", "relax,md") == ["md", "relax"]  # xpr's comma-separated list


def test_system_matches_the_whole_name(project: Path) -> None:
    assert names("-S", "slurm") == ["prerelax", "relax"]
    assert names("-S", "slurm.*") == sorted(NAMES)


def test_rm_with_a_name_deletes_only_that_job(project: Path) -> None:
    result = CliRunner().invoke(main, ["rm", "-n", "relax", "-y", "--no-remote"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "removed 1 of 1 job(s)" in result.stdout
    assert names() == ["md", "prerelax", "relax_2"]
