"""The benchmark's workload and its private copy of the configuration.

Every run gets a fresh ``EXPYRE_ROOT`` (a temporary directory holding the merged
``config.json``): job keys are content hashes, so re-running the same calls against the
user's own root would re-attach to finished jobs instead of submitting anything.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from wfl_async.bench import (
    BASE,
    current_rss,
    fresh_root,
    merged_raw_config,
    peak_rss,
    reset_peak_rss,
    trivial_args,
)

__all__ = ["BASE", "TRIVIAL_FUNCTION", "TRIVIAL_FUNCTION_NAME", "current_rss", "fresh_root", "merged_raw_config", "peak_rss", "reset_peak_rss", "trivial_args"]

TRIVIAL_FUNCTION: Callable[[int, int], int] = operator.add
"""The job: a builtin, so unpickling it imports nothing and the job's Python start-up is all it costs."""
TRIVIAL_FUNCTION_NAME = "operator:add"
"""The same, by name, for the ExPyRe subprocess (which imports nothing of wfl_async)."""
