"""wfl's ConfigSet/OutputSpec and ours, usable in each other's operations while a script moves over.

* Ours are subclasses of wfl's when wfl is installed, because wfl's operations check
  ``isinstance(outputspec, wfl.configset.OutputSpec)``; ours implement every method wfl calls.
  (``wfl.configset`` imports only ASE, not ExPyRe.)
* wfl's are converted to ours at the start of each of our operations (:func:`from_wfl`), so that
  everything past that point (chunking, locations, partial files) is our code's.
* Not in a queued job (:func:`~._in_job.in_job`): there our ConfigSet/OutputSpec only
  feed our own pool, which calls the operation on lists of Atoms, so wfl never sees them; and
  importing ``wfl.configset`` (which imports ``ase.io`` and through it scipy) would cost every
  job ~0.4 s of CPU at start-up.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ._in_job import in_job

__all__ = ["from_wfl", "wfl_base"]


def wfl_base(name: str) -> tuple[type, ...]:
    """``(wfl.configset.<name>,)`` if wfl is installed (and this is not a queued job), else ``()``."""
    if in_job():
        return ()
    try:
        module = importlib.import_module("wfl.configset")
    except ImportError:
        return ()
    base = getattr(module, name, None)
    return (base,) if isinstance(base, type) else ()


def from_wfl(value: Any) -> Any:
    """Our ConfigSet/OutputSpec for a wfl one (already ours, or anything else: unchanged)."""
    wfl = sys.modules.get("wfl.configset")  # a wfl object exists only if the caller imported wfl
    if wfl is None:
        return value
    from ._configset import ConfigSet
    from ._outputspec import OutputSpec

    if isinstance(value, ConfigSet | OutputSpec):
        return value
    if isinstance(value, wfl.OutputSpec):
        files = value.files[0] if value.files is not None and value.single_file else value.files
        return OutputSpec(files, file_root=value.file_root, overwrite=value.overwrite, flush=value.flush,
                          write_kwargs=dict(value.write_kwargs), tags=dict(value.tags))
    if isinstance(value, wfl.ConfigSet):
        items = value.items
        if isinstance(items, list):
            items = [from_wfl(item) for item in items]
        return ConfigSet(items, read_kwargs=dict(value.read_kwargs))
    return value
