"""The benchmark's workload and its private copy of the configuration.

Every run gets a fresh ``EXPYRE_ROOT`` (a temporary directory holding the merged
``config.json``): job keys are content hashes, so re-running the same calls against the
user's own root would re-attach to finished jobs instead of submitting anything.
"""

from __future__ import annotations

import json
import operator
import os
import resource
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config.expyre_modules import expyre_module
from ..config.loader import config_dirs

__all__ = ["BASE", "TRIVIAL_FUNCTION", "TRIVIAL_FUNCTION_NAME", "current_rss", "fresh_root", "merged_raw_config", "peak_rss", "reset_peak_rss", "trivial_args"]

TRIVIAL_FUNCTION: Callable[[int, int], int] = operator.add
"""The job: a builtin, so unpickling it imports nothing and the job's Python start-up is all it costs."""
TRIVIAL_FUNCTION_NAME = "operator:add"
"""The same, by name, for the ExPyRe subprocess (which imports nothing of wfl_async)."""
BASE = 2000


def trivial_args(index: int) -> tuple[int, int]:
    """Arguments of job ``index``; its result is ``index + BASE``."""
    return (index, BASE)


def merged_raw_config() -> dict[str, Any]:
    """The ``config.json`` contents that apply here, merged as the loader merges them (raw JSON)."""
    merge = expyre_module("config").update_dict_leaves
    data: dict[str, Any] = {}
    for directory in config_dirs():
        path = directory / "config.json"
        if path.exists():
            merge(data, json.loads(path.read_text()))
    data.pop("local_stage_dir", None)
    return data


@contextmanager
def fresh_root(prefix: str, config: dict[str, Any], *, keep: bool = False) -> Iterator[Path]:
    """A new temporary ``EXPYRE_ROOT`` holding ``config`` as its ``config.json``; set while inside."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    (root / "config.json").write_text(json.dumps(config, indent=2))
    saved = os.environ.get("EXPYRE_ROOT")
    os.environ["EXPYRE_ROOT"] = str(root)
    try:
        yield root
    finally:
        if saved is None:
            os.environ.pop("EXPYRE_ROOT", None)
        else:
            os.environ["EXPYRE_ROOT"] = saved
        if not keep:
            _rmtree(root)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss() -> int:
    """Peak resident memory of this process in bytes (``VmHWM``, else ``ru_maxrss``)."""
    kb = _status_kb("VmHWM")
    return kb * 1024 if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int | None:
    """Resident memory of this process now, in bytes (``VmRSS``), where known."""
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else None
