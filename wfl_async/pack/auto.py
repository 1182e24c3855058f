"""``pack="auto"``: whether one call's chunks are packed, decided once per call before submitting.

The rule, from what this machine already knows (no remote command):

1. Chunks of the same call name (``<job_name>_chunk_*``) that finished before, in earlier
   runs or calls, left their fetched files in the local stage directory; a chunk's run time
   is its result's time minus its ``started`` marker's time (both fetched with the result,
   times kept). If at least :data:`MIN_SAMPLES` are there, the call is packed when the median
   of the latest :data:`MAX_SAMPLES` is under :data:`SHORT_SECONDS`: a chunk that short pays
   more for its queue wait and Python start-up than for its work.
2. Otherwise (nothing to go by) it is packed when it has more than ``2 x workers`` chunks:
   below that, one job per chunk costs little and packing gains nothing.

A chunk already submitted either way is re-attached as it is (the setting is not part of the job key).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ..jobs import layout
from ..jobs.pack_option import PackSetting
from ..system.paths import safe_name

__all__ = ["MAX_SAMPLES", "MIN_SAMPLES", "SHORT_SECONDS", "chunk_run_times", "decide"]

SHORT_SECONDS = 60.0
MIN_SAMPLES = 3
MAX_SAMPLES = 50


def chunk_run_times(stage_root: Path, job_name: str) -> list[float]:
    """Run times (s) of the latest finished chunks of ``job_name`` found in ``stage_root``, newest first."""
    prefix = safe_name(f"{job_name}_chunk_")
    found: list[tuple[float, float]] = []
    if not stage_root.is_dir():
        return []
    for job_dir in stage_root.glob(f"{prefix}*"):
        result, started = job_dir / layout.RESULT, job_dir / layout.STARTED
        try:
            end, begin = result.stat().st_mtime, started.stat().st_mtime
        except OSError:
            continue
        found.append((end, max(0.0, end - begin)))
    found.sort(reverse=True)
    return [duration for _, duration in found[:MAX_SAMPLES]]


def decide(stage_root: Path, job_name: str, chunks: int, workers: int | None = None) -> PackSetting | None:
    """The setting ``pack="auto"`` stands for in this call: a :class:`PackSetting`, or None (not packed)."""
    setting = PackSetting() if workers is None else PackSetting(workers=workers)
    times = chunk_run_times(stage_root, job_name)
    if len(times) >= MIN_SAMPLES:
        return setting if statistics.median(times) < SHORT_SECONDS else None
    return setting if chunks > 2 * setting.workers else None
