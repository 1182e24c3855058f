"""Queueing-system schedulers, picked by the name ExPyRe's ``config.json`` gives them.

Schedulers are pure: they build shell text and parse what it prints (see
:class:`~wfl_async.scheduler.base.Scheduler`); the system layer runs the commands.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError
from ..jobs.states import ACTIVE_STATES, QueueState
from .base import JobScriptSpec, Scheduler, SubmitResult
from .local import LocalScheduler
from .pbs import PBSScheduler
from .sge import SGEScheduler
from .slurm import SlurmScheduler

__all__ = [
    "ACTIVE_STATES",
    "SCHEDULERS",
    "JobScriptSpec",
    "LocalScheduler",
    "PBSScheduler",
    "QueueState",
    "SGEScheduler",
    "Scheduler",
    "SlurmScheduler",
    "SubmitResult",
    "get_scheduler",
]

SCHEDULERS: dict[str, type[Scheduler]] = {
    "slurm": SlurmScheduler,
    "pbs": PBSScheduler,
    "sge": SGEScheduler,
    "local": LocalScheduler,
}
"""Scheduler classes by the names ExPyRe's ``config.json`` uses in ``"scheduler"``."""


def get_scheduler(name: str, **options: Any) -> Scheduler:
    """The scheduler called ``name`` in a system's configuration.

    :param name: ``"slurm"``, ``"pbs"``, ``"sge"`` or ``"local"``
    :param options: passed to the scheduler's constructor (only ``local`` takes any:
        ``slot_dir``, ``max_jobs``)
    :return: a new scheduler object
    :raises ConfigurationError: unknown name, or options the scheduler does not take
    """
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown scheduler {name!r}; set \"scheduler\" in the system's config.json to one of "
            f"{', '.join(repr(n) for n in SCHEDULERS)}"
        ) from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigurationError(f"bad options {sorted(options)} for the {name!r} scheduler: {exc}") from exc
