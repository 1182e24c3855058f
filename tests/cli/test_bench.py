"""Smoke tests of ``wfl-async bench`` and of the benchmarks harness, on ``local`` and one ssh system.

Figures are asserted for what they count (jobs, connections, polls), never for speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.remote

SYSTEMS = ["local", "slurm_ssh"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": os.getcwd(), "WFL_ASYNC_PROGRESS": "0"})


def test_bench_reports_every_figure_from_the_records(expyre_root: Path) -> None:
    result = run("-m", "wfl_async.cli", "bench", *SYSTEMS, "-N", "3", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    figures = {f["system"]: f for f in json.loads(result.stdout)}
    assert sorted(figures) == sorted(SYSTEMS)
    for f in figures.values():
        assert f["jobs"] == 3 and f["ok"] == 3 and f["failed"] == 0 and f["errors"] == []
        assert 0 < f["submit_all_s"] and 0 < f["first_result_s"] <= f["all_results_s"]
        assert f["jobs_per_s"] > 0 and f["peak_rss_bytes"] > 0
        kinds = f["per_poll"]["by_kind"]
        assert kinds["submit"] >= 1 and kinds["poll"] == f["polls"] >= 1 and kinds["fetch"] >= 1
        assert kinds["probe"] >= 1  # the first-submission system check
        assert f["remote_commands"] == sum(kinds.values())
        # one status command per poll at most (a poll skips it while the rate limit has no token
        # to spare), and no other scheduler call but the submissions
        assert f["scheduler_commands"] - f["submit_commands"] == f["queue_listings"] >= 1
        assert 0 < f["scheduler_commands_per_poll"] <= 1.0
    assert figures["local"]["ssh_connections"] == 0 and figures["slurm_ssh"]["ssh_connections"] == 1


def test_bench_table_and_a_bad_system(expyre_root: Path) -> None:
    table = run("-m", "wfl_async.cli", "bench", "local", "-N", "1")
    assert table.returncode == 0 and table.stdout.splitlines()[0].startswith("SYSTEM")
    assert table.stdout.splitlines()[1].split()[:3] == ["local", "1", "1"]
    bad = run("-m", "wfl_async.cli", "bench", "no_such_system")
    assert bad.returncode == 1 and "unknown system 'no_such_system'" in bad.stderr


def test_benchmarks_harness_writes_its_report(expyre_root: Path, tmp_path: Path) -> None:
    """``python -m benchmarks.wfl_async_bench`` (the docs' command) gets to the end of its report."""
    out = tmp_path / "figures.json"
    result = run("-m", "benchmarks.wfl_async_bench", "--systems", "slurm_ssh", "--jobs", "2",
                 "--no-compare-expyre", "--json", str(out), cwd=Path.cwd())
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"figures written to {out}" in result.stdout
    runs = json.loads(out.read_text())["runs"]
    assert [r["implementation"] for r in runs][0] == "wfl_async" and runs[0]["ok"] == 2
    assert len(runs) == 2 and runs[1]["ok"] == 2  # the floor ran the same job scripts
