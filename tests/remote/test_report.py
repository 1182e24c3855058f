"""``wfl-async report`` on a real run on Slurm (one job per chunk, as job arrays, and packed, with
failures), opened in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The page must render with no console error and no network request, and its numbers must be
the jobs database's.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from ase.build import bulk
from click.testing import CliRunner

from tests.helpers import remote_functions as rf
from wfl_async.autoparallelize import AutoparaInfo, RemoteInfo
from wfl_async.cli import main
from wfl_async.configset import ConfigSet, OutputSpec
from wfl_async.session import DB_NAME

pytestmark = pytest.mark.remote

CHROMIUM = "/usr/bin/chromium"


def cells(n: int, bad: set[int]) -> list[Any]:
    out = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.info["i"] = i
        if i in bad:
            atoms.info["bad"] = True
        out.append(atoms)
    return out


def run_call(name: str, n: int, bad: set[int], tmp_path: Path, **extra: Any) -> None:
    info = RemoteInfo(sys_name="slurm", job_name=name, resources={"num_nodes": 1, "max_time": "10m"},
                      check_interval=0.3, num_inputs_per_queued_job=1, ignore_failed_jobs=True, **extra)
    with pytest.warns(UserWarning, match="failed"):
        rf.label_or_raise(ConfigSet(cells(n, bad)), OutputSpec(tmp_path / f"{name}.xyz"),
                          autopara_info=AutoparaInfo(remote_info=info, num_inputs_per_python_subprocess=1))


def db_rows(root: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(root / DB_NAME) as conn:
        conn.row_factory = sqlite3.Row
        return {r["name"]: dict(r) for r in conn.execute("SELECT * FROM jobs")}


@pytest.fixture
def finished_run(fresh_expyre_root: Path, tmp_path: Path) -> tuple[Path, str, str]:
    t = uuid.uuid4().hex[:6]
    arrays, packed = f"arrays{t}", f"packed{t}"
    run_call(arrays, 8, {2, 5}, tmp_path)
    run_call(packed, 6, {1}, tmp_path, pack={"workers": 2, "idle_seconds": 1})
    return fresh_expyre_root, arrays, packed


def test_report_numbers_match_the_database_and_the_page_renders_offline(
        finished_run: tuple[Path, str, str], tmp_path: Path) -> None:
    root, arrays, packed = finished_run
    rows = db_rows(root)
    mine = {n: r for n, r in rows.items() if n.startswith((arrays, packed))}
    assert len(mine) == 14
    # what the database recorded for the report: every phase, where each ran, its cores
    for name, row in mine.items():
        assert row["submitted_at"] and row["started_at"] and row["finished_at"] and row["fetched_at"], name
        # the markers' times come back whole seconds (the tar stream's resolution): 1 s of slack
        assert row["created_at"] <= row["submitted_at"] <= row["started_at"] + 1 <= row["finished_at"] + 2
        assert row["finished_at"] <= row["fetched_at"] and row["cores"] >= 1 and row["worker"], name
    assert all("/" in mine[n]["worker"] for n in mine if n.startswith(packed))  # host/worker
    assert all("/" not in mine[n]["worker"] for n in mine if n.startswith(arrays))
    failed = {n: r for n, r in mine.items() if r["status"] == "failed"}
    assert len(failed) == 3 and all("CustomRemoteError: bad configuration" in r["message"] for r in failed.values())

    runner = CliRunner()
    result = runner.invoke(main, ["report", arrays, packed, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout)
    assert numbers["jobs"] == 14 and numbers["by_status"] == {"processed": 11, "failed": 3}
    assert [(f["status"], f["count"]) for f in numbers["failures"]] == [("failed", 3)]
    assert "CustomRemoteError" in numbers["failures"][0]["cause"]
    spans = {s["name"]: s for s in numbers["spans"]}
    for name, row in mine.items():
        assert spans[name]["started"] == row["started_at"] and spans[name]["finished"] == row["finished_at"]
    assert sum(w["chunks"] for w in numbers["workers"]) == 14
    assert sum(1 for w in numbers["workers"] if w["packed"]) in (1, 2)  # workers that took a chunk
    used = sum(r["cores"] * (r["finished_at"] - r["started_at"]) for r in mine.values()
               if r["status"] == "processed") / 3600
    assert numbers["core_hours"]["used"] == pytest.approx(used)
    assert numbers["costs"]["sessions"] >= 2 and numbers["costs"]["systems"]["slurm"]["scheduler_calls"] >= 2

    page = tmp_path / "report.html"
    result = runner.invoke(main, ["report", arrays, packed, "-o", str(page)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "cdn.bokeh.org" not in text and "<script src=" not in text  # every script inlined
    shown = open_in_chromium(page)
    assert shown["errors"] == [] and shown["requests"] == [f"file://{page}"]
    assert shown["figures"]["jobs"] == "14"
    assert shown["statuses"] == {"failed": "3", "processed": "11"}
    assert shown["bokeh_roots"] == 1 and shown["canvases"] >= 4


def test_cli_fits_80_and_120_columns_and_shows_logs_and_reruns(finished_run: tuple[Path, str, str]) -> None:
    root, arrays, packed = finished_run
    rows = db_rows(root)
    packed_id = next(r["remote_id"] for n, r in rows.items() if n.startswith(packed))
    runner = CliRunner()
    for width in (80, 120):
        shown = runner.invoke(main, ["ls"], env={"COLUMNS": str(width)}, catch_exceptions=False)
        lines = shown.stdout.splitlines()
        assert shown.exit_code == 0 and all(len(line) <= width for line in lines), shown.stdout
        header = lines[0].split()
        assert header[:4] == ["NAME", "STATUS", "ID", "RUN"] and ("JOB" in header) == (width == 120)
        # the chunk number and its array task side by side; a packed chunk's id shortened to its pack
        chunk_3 = next(line.split() for line in lines if line.startswith(f"{arrays}_chunk_3 "))
        assert chunk_3[2] == rows[f"{arrays}_chunk_3"]["remote_id"]
        assert packed_id not in shown.stdout and f"pack:{packed_id.split(':')[1][:8]}" in shown.stdout
        assert lines[-1] == "14 job(s): 11 processed, 3 failed; run time " + lines[-1].split("run time ")[1]
        status = runner.invoke(main, ["status"], env={"COLUMNS": str(width)}, catch_exceptions=False)
        assert all(len(line.rstrip()) <= width for line in status.stdout.splitlines()), status.stdout
        assert status.stdout.split()[:2] == ["SYSTEM", "CREATED" if width == 120 else "DONE"]
    whole = runner.invoke(main, ["ls", "-l", "-n", f"{packed}_chunk_0"], catch_exceptions=False)
    assert packed_id.split(":")[1] in whole.stdout and "where:" in whole.stdout
    assert runner.invoke(main, ["ls", "--active"], catch_exceptions=False).stderr.startswith("no active jobs")
    limited = runner.invoke(main, ["ls", "--limit", "2"], env={"COLUMNS": "80"}, catch_exceptions=False)
    assert len(limited.stdout.splitlines()) == 4 and "(2 shown: --limit)" in limited.stdout

    summary = runner.invoke(main, ["status", "--summary"], catch_exceptions=False).stdout.splitlines()
    assert summary[0] == "jobs: 14 job(s): 11 processed, 3 failed; on slurm (14); " + summary[0].split("; ")[-1]
    assert summary[2].startswith("3 failed: tests.helpers.remote_functions.CustomRemoteError (e.g. ")

    failed = sorted(n for n, r in rows.items() if r["status"] == "failed")
    shown = runner.invoke(main, ["log", failed[0], "--lines", "3"], catch_exceptions=False)
    assert shown.exit_code == 0 and f"{failed[0]}: failed on slurm" in shown.stdout
    assert "error: tests.helpers.remote_functions.CustomRemoteError: bad configuration" in shown.stdout
    assert shown.stdout.rstrip().endswith(rows[failed[0]]["message"]) and "(last 3 of" in shown.stdout
    # a packed chunk's log, kept in its fetched batch's bundle, without asking the system
    packed_failed = next(n for n in failed if n.startswith(packed))
    kept = runner.invoke(main, ["log", packed_failed, "--no-fetch", "--lines", "3"], catch_exceptions=False)
    assert "_wfl_async_fetched" in kept.stdout and "(last 3 of" in kept.stdout, kept.stdout + kept.stderr

    marked = runner.invoke(main, ["retry", arrays], catch_exceptions=False)
    assert marked.exit_code == 0 and "rerun: 2 job(s) marked (2 failed)" in marked.stdout
    after = db_rows(root)
    assert sorted(n for n, r in after.items() if r["status"] == "rerun") == [n for n in failed if n.startswith(arrays)]


def open_in_chromium(page: Path) -> dict[str, Any]:
    """What a real browser shows: console errors, every request, the tables' figures, Bokeh's plots."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(f"file://{page}")
            tab.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=30_000)
            tab.wait_for_timeout(500)
            shown = tab.evaluate("""() => {
                const cells = s => Object.fromEntries([...document.querySelectorAll(s)].map(
                    td => [td.dataset.key || td.dataset.status, td.textContent]));
                let canvases = 0;  // Bokeh draws in shadow roots
                const walk = node => { for (const el of node.querySelectorAll('*')) {
                    if (el.tagName === 'CANVAS' && el.width > 0) canvases += 1;
                    if (el.shadowRoot) walk(el.shadowRoot); } };
                walk(document);
                return {figures: cells('table[data-key=figures] td'), statuses: cells('td[data-status]'),
                        bokeh_roots: Bokeh.documents[0].roots().length, canvases: canvases};
            }""")
        finally:
            browser.close()
    return {**shown, "errors": errors, "requests": requests}
