"""JobOptions: how one queued job is to be run, shared by RemoteInfo and RemoteJob.

One description, one name per option: ``RemoteInfo`` (wfl's) holds one of these plus its
chunking fields, and ``RemoteJob`` is a function call plus one of these. The names are
wfl's (``resubmit_killed_jobs``), so a RemoteInfo dict and a RemoteJob take the same words.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .env_vars import check_env_vars
from .pack_option import check_pack

__all__ = ["SUBMIT_MODES", "JobOptions", "WithOptions"]

SUBMIT_MODES = ("loop", "array")
"""How jobs reach the scheduler: ``loop``, one submission each; ``array``, jobs with the same
header as job arrays (one scheduler call per array)."""


def check_submit_mode(value: object, where: str) -> None:
    """Refuse a ``submit`` value that is not one of :data:`SUBMIT_MODES`, saying what to write."""
    if value is not None and value not in SUBMIT_MODES:
        raise ConfigurationError(f"{where}: submit={value!r} is not a submit mode; use \"array\" (job arrays) "
                                 f"or \"loop\" (one scheduler submission per job)")


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return value


@dataclass(frozen=True)
class JobOptions:
    """How a queued job is run (ExPyRe/wfl ``RemoteInfo`` semantics).

    ``resources`` are ExPyRe ``Resources`` keys (``max_time``, ``num_nodes`` or ``num_cores``,
    ...); ``env_vars`` are ``NAME=value`` shell assignments (the value may use
    ``$EXPYRE_NUM_CORES_PER_NODE`` etc., as in ExPyRe); ``input_files`` are copied next to the
    job (relative paths keep their relative location, absolute ones land at the top);
    ``output_files`` are copied back to the current directory on success; ``timeout`` (s)
    bounds the whole wait, resubmission included (the job stays queued and a rerun
    re-attaches); ``check_interval`` (s) is the longest acceptable delay between a job finishing
    and being seen; ``hash_ignore`` names arguments left out of the job key; ``code_version``
    adds the function's module source (``True``) or a string to the job key;
    ``resubmit_killed_jobs`` creates a job that died afresh, once per call; ``submit``
    (``"array"`` or ``"loop"``, default None: the system's ``submit``) is how the jobs reach the
    scheduler, and is not part of the job key (a rerun in the other mode re-attaches); ``pack``
    (``{"workers": N}``, ``"auto"``, ``False``; None: the system's default) runs the chunks of a
    call inside a few worker jobs (:mod:`wfl_async.pack`); it is not part of the job key either.
    ``escalate`` (default True) meets a kill at the job's limits with more: a chunk killed at its
    time limit is split, a single job rerun with twice the time, one killed above its memory with
    twice the memory, up to the partition's limits (:mod:`wfl_async.jobs.escalation`); False: such a
    job died (and ``resubmit_killed_jobs`` resubmits it as it was). Not part of the job key.
    """

    resources: Mapping[str, Any] = field(default_factory=lambda: {"num_cores": 1, "max_time": "1h"})
    input_files: Sequence[str | Path] = ()
    output_files: Sequence[str] = ()
    env_vars: Sequence[str] = ()
    pre_cmds: Sequence[str] = ()
    post_cmds: Sequence[str] = ()
    header_extra: Sequence[str] = ()
    exact_fit: bool = True
    partial_node: bool = False
    timeout: float | None = None
    check_interval: float = 30.0
    hash_ignore: Sequence[int | str] = ()
    code_version: bool | str | None = None
    resubmit_killed_jobs: bool = False
    submit: str | None = None
    pack: Any = None
    escalate: bool = True

    def __post_init__(self) -> None:
        check_env_vars(self.env_vars)  # refused here, before anything can be submitted
        check_submit_mode(self.submit, "job options")
        check_pack(self.pack)
        for item in dataclasses.fields(self):
            object.__setattr__(self, item.name, _frozen(getattr(self, item.name)))
        object.__setattr__(self, "resources", dict(self.resources))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> JobOptions:
        return dataclasses.replace(self, **changes)


class WithOptions:
    """Reads and sets the job options as attributes (``info.timeout = 60``), as wfl's RemoteInfo does.

    The object keeps one :class:`JobOptions` in ``options``; setting an option replaces it.
    """

    options: JobOptions
    _option_names: frozenset[str] = frozenset(JobOptions.names())

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._option_names and "options" in self.__dict__:
            value = getattr(self.__dict__["options"], name)
            return list(value) if isinstance(value, tuple) else value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self)._option_names and "options" in self.__dict__:
            self.__dict__["options"] = self.options.replace(**{name: value})
        else:
            super().__setattr__(name, value)
