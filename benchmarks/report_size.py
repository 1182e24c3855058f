"""How ``wfl-async report`` scales: numbers, HTML and opening the page for thousands of chunks.

A synthetic run (no daemons needed): N chunks, four fifths packed into worker jobs, the rest
one job per chunk, 5 % failed. Prints the time to compute the numbers, to draw the page, its
size, and (with Debian's chromium at /usr/bin/chromium and Playwright) the time until Bokeh
reports the page drawn::

    python benchmarks/report_size.py --chunks 5000
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from wfl_async.jobs.database import JobRecord
from wfl_async.jobs.states import JobStatus
from wfl_async.report import build_report
from wfl_async.report.html import render_html

T0 = 1_800_000_000.0


def synthetic_run(chunks: int, workers: int = 40, seed: int = 1) -> list[JobRecord]:
    rng = random.Random(seed)
    records = []
    free_at = [T0 + rng.uniform(0, 60) for _ in range(workers)]
    for i in range(chunks):
        packed = i % 5 != 0
        submitted = T0 + i * 0.01
        if packed:
            w = min(range(workers), key=free_at.__getitem__)
            started = max(free_at[w], submitted)
            worker = f"node{w % 8}/w{w:03d}"
        else:
            started = submitted + rng.expovariate(1 / 30)
            worker = f"node{i % 8}"
        finished = started + rng.uniform(5, 60)
        if packed:
            free_at[w] = finished
        failed = rng.random() < 0.05
        records.append(JobRecord(
            key=f"k{i}", name=f"bench_chunk_{i}", system="cluster", owner="me",
            status=JobStatus.FAILED if failed else JobStatus.PROCESSED, job_dir=f"bench_chunk_{i}-x",
            remote_root="/r", remote_id=f"pack:abc:bench_chunk_{i}" if packed else f"{1000 + i}",
            created_at=submitted - 0.5, updated_at=finished + 1,
            message=f"ValueError: bad input {i}" if failed else None, submitted_at=submitted, started_at=started,
            finished_at=finished, fetched_at=finished + rng.uniform(0.2, 2), worker=worker, cores=4, max_time=3600))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=5000)
    args = parser.parse_args()
    records = synthetic_run(args.chunks)
    start = time.perf_counter()
    report = build_report(records, {}, time.time())
    numbers = time.perf_counter() - start
    start = time.perf_counter()
    page = render_html(report, "benchmark")
    drawing = time.perf_counter() - start
    print(f"{args.chunks} chunks: numbers {numbers:.2f} s, HTML {drawing:.2f} s, page {len(page) / 1e6:.2f} MB")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright not installed: the time to open the page is not measured")
        return
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        path = Path(tmp) / "report.html"
        path.write_text(page)
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        tab = browser.new_page()
        idle = []
        tab.on("console", lambda m: idle.append(time.perf_counter()) if "document idle" in m.text else None)
        start = time.perf_counter()
        tab.goto(f"file://{path}")
        tab.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=120_000)
        while not idle and time.perf_counter() - start < 120:
            tab.wait_for_timeout(50)
        print(f"opened in headless Chromium: drawn {idle[0] - start:.2f} s after loading began" if idle
              else "Bokeh did not report the page drawn within 120 s")
        browser.close()


if __name__ == "__main__":
    main()
