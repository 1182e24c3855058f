"""Benchmark harness: N trivial queued jobs per system, against the floor and wfl + ExPyRe.

Run ``python -m benchmarks.wfl_async_bench --help``; from code, :func:`run_benchmark` with
:class:`BenchmarkOptions` returns a :class:`BenchmarkReport`. See ``docs/benchmark.md``.
"""

from ._figures import PollFigures, RunFigures
from ._harness import BenchmarkOptions, BenchmarkReport, run_benchmark
from ._report import format_report

__all__ = ["BenchmarkOptions", "BenchmarkReport", "PollFigures", "RunFigures", "format_report", "run_benchmark"]
