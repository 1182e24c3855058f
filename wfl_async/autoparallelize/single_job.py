"""Run a whole (non-autoparallelized) function as ONE queued job, chosen by an environment variable.

wfl does this for its fits: ``WFL_GAP_SIMPLE_FIT_REMOTEINFO``, ``WFL_GAP_MULTISTAGE_FIT_REMOTEINFO``
and ``WFL_ACE_FIT_REMOTEINFO`` each hold RemoteInfo fields (or ``WFL_EXPYRE_INFO``-style keyed
dicts, matched against the call stack) and, when set, the fit runs as a queued job instead of in
this process. The same mechanism, for any function::

    @single_queued_job("MY_FIT_REMOTEINFO")
    def my_fit(training_file, params): ...

    my_fit("train.xyz", params)                      # local, unless MY_FIT_REMOTEINFO is set
    await my_fit.aio("train.xyz", params)            # async form
    my_fit("train.xyz", params, remote_info={...})   # explicit RemoteInfo wins over the variable

Only the RemoteInfo fields that make sense for one job are used (``num_inputs_per_queued_job``,
``ignore_failed_jobs`` do not apply).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from .._sync import run_sync
from .expyre_info import caller_stack_labels, resolve_remote_info
from .remoteinfo import RemoteInfo

__all__ = ["SingleQueuedJob", "single_queued_job"]

P = ParamSpec("P")
T = TypeVar("T")


class SingleQueuedJob(Generic[P, T]):
    """``function`` that runs as one queued job when its variable (or ``remote_info=``) says so."""

    def __init__(self, function: Callable[P, T], env_var: str) -> None:
        self.function = function
        self.env_var = env_var
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, remote_info: RemoteInfo | dict[str, Any] | None = None, **kwargs: Any) -> T:
        resolved = resolve_remote_info(remote_info, None, stack=caller_stack_labels(), env_var=self.env_var)
        if resolved is None:
            return self.function(*args, **kwargs)
        return run_sync(self._queued(resolved, args, kwargs).aio)

    async def aio(self, *args: Any, remote_info: RemoteInfo | dict[str, Any] | None = None, **kwargs: Any) -> T:
        resolved = resolve_remote_info(remote_info, None, stack=caller_stack_labels(), env_var=self.env_var)
        if resolved is None:
            import anyio

            return await anyio.to_thread.run_sync(functools.partial(self.function, *args, **kwargs))
        return await self._queued(resolved, args, kwargs).aio()

    def _queued(self, info: RemoteInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from .remote import job_from_remote_info  # lazy: pulls in jobs and systems

        return job_from_remote_info(info, self.function, args, kwargs)


def single_queued_job(env_var: str) -> Callable[[Callable[P, T]], SingleQueuedJob[P, T]]:
    """Decorator: see the module docstring."""

    def wrap(function: Callable[P, T]) -> SingleQueuedJob[P, T]:
        return SingleQueuedJob(function, env_var)

    return wrap
