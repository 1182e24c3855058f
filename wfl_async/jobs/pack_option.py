"""The ``pack`` option of RemoteInfo/JobOptions and of a system's config.json, checked in one place.

Values: ``None`` (the system's default), ``False`` (off, also over a system default),
``{"workers": N}`` (pack into at most N worker jobs), ``"auto"`` (pack when the chunks are
expected to be short: :mod:`wfl_async.pack.auto`). The option is not part of the job key:
packed or not, a chunk is the same job, so a rerun re-attaches whichever way it ran.
It lives in the floor data layer beside :mod:`wfl_async.jobs.options` because the job options and a
system's config.json both check it; it imports only :mod:`wfl_async.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = ["AUTO", "DEFAULT_WORKERS", "PackSetting", "check_pack", "effective_pack"]

AUTO = "auto"
DEFAULT_WORKERS = 8
"""Worker jobs per call and system with ``pack="auto"`` or ``{"workers"}`` left out."""
_KEYS = {"workers", "idle_seconds"}


@dataclass(frozen=True)
class PackSetting:
    """Packing switched on: at most ``workers`` worker jobs; each waits ``idle_seconds`` for more work."""

    workers: int = DEFAULT_WORKERS
    idle_seconds: float = 10.0
    """Long enough to bridge the gaps between a call's enqueue batches (a worker that left early
    is replaced, but that costs a new job's queue wait); short next to a worker's time limit."""


def check_pack(value: Any, where: str = "pack") -> Any:
    """``value`` if it is a valid ``pack`` setting, else a ConfigurationError naming the fix."""
    _parse(value, where)
    return dict(value) if isinstance(value, Mapping) else value


def effective_pack(call_value: Any, system_value: Any) -> PackSetting | str | None:
    """The call's setting, else the system's: a :class:`PackSetting`, :data:`AUTO`, or None (off)."""
    value = call_value if call_value is not None else system_value
    return _parse(value, "pack")


def _parse(value: Any, where: str) -> PackSetting | str | None:
    fix = (f"{where} must be {{\"workers\": N}} (N >= 1), \"auto\", false or null (null: the system's "
           f"config.json default)")
    if value is None or value is False:
        return None
    if value == AUTO:
        return AUTO
    if value is True:
        return PackSetting()
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{where} = {value!r} is not a packing setting; {fix}")
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        raise ConfigurationError(f"{where} has unknown key(s) {unknown}; valid keys are {sorted(_KEYS)}. {fix}")
    workers = value.get("workers", DEFAULT_WORKERS)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigurationError(f"{where}: workers = {workers!r} is not a whole number >= 1; {fix}")
    idle = value.get("idle_seconds", PackSetting.idle_seconds)
    if not isinstance(idle, (int, float)) or isinstance(idle, bool) or idle < 0:
        raise ConfigurationError(f"{where}: idle_seconds = {idle!r} must be a number of seconds >= 0")
    return PackSetting(workers=workers, idle_seconds=float(idle))
