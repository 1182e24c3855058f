"""The ``pack`` option of RemoteInfo/JobOptions and of a system's config.json, checked in one place.

Values: ``None`` (the system's default), ``False`` (off, also over a system default),
``{"workers": N}`` (pack into at most N worker jobs, fixed chunks), ``"auto"`` (self-tuned: chunk
size, worker count and worker walltime chosen from measured times, docs/self-tuning.md), or a
dict of the self-tuning's settings (``{"target_chunk_seconds": 60, "walltime": "2h",
"max_workers": 32}``: self-tuned, those parts fixed). The option is not part of the job key:
packed or not, a chunk is the same job, so a rerun re-attaches whichever way it ran.
It lives in the floor data layer beside :mod:`wfl_async.jobs.options` because the job options and a
system's config.json both check it; it imports only :mod:`wfl_async.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = ["AUTO", "DEFAULT_WORKERS", "PackSetting", "check_pack", "effective_pack", "parse_seconds"]

AUTO = "auto"
DEFAULT_WORKERS = 8
"""Worker jobs per call and system with ``pack="auto"`` or ``{"workers"}`` left out."""
_FIXED_KEYS = {"workers", "idle_seconds"}
_TUNING_KEYS = {"target_chunk_seconds", "walltime", "max_workers"}
_KEYS = _FIXED_KEYS | _TUNING_KEYS
TARGET_CHUNK_SECONDS = 30.0
"""A self-tuned task's aim (s): long next to a task's own cost in a worker (well under a second),
short next to a worker's walltime, so the end of a call is balanced."""
TUNED_IDLE_SECONDS = 5.0
"""A self-tuned call keeps its queue filled as results come back: a worker that finds it empty
for this long has reached the call's end (its idle time is paid in core-seconds)."""


@dataclass(frozen=True)
class PackSetting:
    """Packing switched on: at most ``workers`` worker jobs; each waits ``idle_seconds`` for more work."""

    workers: int = DEFAULT_WORKERS
    idle_seconds: float = 10.0
    """Long enough to bridge the gaps between a call's enqueue batches (a worker that left early
    is replaced, but that costs a new job's queue wait); short next to a worker's time limit."""
    tuned: bool = False
    """Self-tuned (``"auto"`` or a dict of tuning keys): chunk size, worker count and walltime
    chosen from measured times (:mod:`wfl_async.pack.tuning`)."""
    target_chunk_seconds: float = TARGET_CHUNK_SECONDS
    walltime: float | None = None
    """Longest walltime (s) of a self-tuned worker; None: the call's ``max_time``."""


def check_pack(value: Any, where: str = "pack") -> Any:
    """``value`` if it is a valid ``pack`` setting, else a ConfigurationError naming the fix."""
    _parse(value, where)
    return dict(value) if isinstance(value, Mapping) else value


def effective_pack(call_value: Any, system_value: Any) -> PackSetting | None:
    """The call's setting, else the system's: a :class:`PackSetting` (``"auto"``: a tuned one), or None (off)."""
    value = call_value if call_value is not None else system_value
    return _parse(value, "pack")


def parse_seconds(value: Any, where: str) -> float:
    """Seconds from a number or a text such as ``"90"``, ``"45m"``, ``"2h"``, ``"1d"`` or ``"1:30:00"``.

    :raises ConfigurationError: anything else, naming ``where`` and the accepted forms
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower()
        try:
            if ":" in text:
                seconds = 0.0
                for part in text.split(":"):
                    seconds = 60 * seconds + float(part)
            elif text[-1] in _UNITS:
                seconds = float(text[:-1]) * _UNITS[text[-1]]
            else:
                seconds = float(text)
        except ValueError:
            raise ConfigurationError(_not_a_time(value, where)) from None
    else:
        raise ConfigurationError(_not_a_time(value, where))
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigurationError(_not_a_time(value, where) + " (above 0)")
    return seconds


def _not_a_time(value: Any, where: str) -> str:
    return f"{where} = {value!r} is not a time: give seconds (7200), or \"45m\", \"2h\", \"1d\" or \"2:00:00\""


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _fix(where: str) -> str:
    """What a valid setting is (made only for an error: every chunk of a call parses its setting)."""
    return (f"{where} must be \"auto\", {{\"workers\": N}} (N >= 1, fixed chunks), a dict of self-tuning keys "
            f"{sorted(_TUNING_KEYS)} (e.g. {{\"target_chunk_seconds\": 60, \"walltime\": \"2h\", \"max_workers\": 32}}), "
            f"false or null (null: the system's config.json default)")


def _parse(value: Any, where: str) -> PackSetting | None:
    if value is None or value is False:
        return None
    if value == AUTO:
        return PackSetting(tuned=True, idle_seconds=TUNED_IDLE_SECONDS)
    if value is True:
        return PackSetting()
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{where} = {value!r} is not a packing setting; {_fix(where)}")
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        raise ConfigurationError(f"{where} has unknown key(s) {unknown}; valid keys are {sorted(_KEYS)}. {_fix(where)}")
    if "workers" in value and "max_workers" in value:
        raise ConfigurationError(f"{where} has both workers and max_workers; give one (max_workers: self-tuned, "
                                 f"at most that many workers; workers: fixed chunks, that many workers)")
    tuned = bool(_TUNING_KEYS & set(value))
    count_key = "max_workers" if tuned else "workers"
    workers = value.get(count_key, DEFAULT_WORKERS)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigurationError(f"{where}: {count_key} = {workers!r} is not a whole number >= 1; {_fix(where)}")
    idle = value.get("idle_seconds", TUNED_IDLE_SECONDS if tuned else PackSetting.idle_seconds)
    if not isinstance(idle, (int, float)) or isinstance(idle, bool) or idle < 0:
        raise ConfigurationError(f"{where}: idle_seconds = {idle!r} must be a number of seconds >= 0")
    target = parse_seconds(value.get("target_chunk_seconds", TARGET_CHUNK_SECONDS), f"{where}: target_chunk_seconds")
    walltime = parse_seconds(value["walltime"], f"{where}: walltime") if "walltime" in value else None
    return PackSetting(workers=workers, idle_seconds=float(idle), tuned=tuned, target_chunk_seconds=target,
                       walltime=walltime)
