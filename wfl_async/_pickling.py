"""Pickling an operation call to run elsewhere: one rule for queued jobs and local subprocesses.

cloudpickle sends module-level functions by reference (the other side imports their module)
and functions defined in ``__main__`` (the user's script), lambdas and closures by value, so
the same call works in a queued job, in a pool subprocess, and in a pool inside a queued job
(where the user's ``__main__`` does not exist). It is imported only when something is sent.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from .errors import UnpicklableOperationError

__all__ = ["callable_identity", "dumps_call"]


def callable_identity(function: Callable[..., Any]) -> str:
    """``module.qualname`` of a function; the type's for a partial or callable instance."""
    module = getattr(function, "__module__", None) or "?"
    name = getattr(function, "__qualname__", None)
    if name is None:
        # functools.partial or a callable instance: its repr holds a memory address, different
        # in every process; the type names it
        module, name = type(function).__module__, type(function).__qualname__
    return f"{module}.{name}"


def dumps_call(function: Callable[..., Any], payload: Any) -> bytes:
    """cloudpickle ``payload`` (the call of ``function``: itself, its arguments).

    :raises UnpicklableOperationError: naming the function, what failed and the fix
    """
    import cloudpickle

    try:
        return cloudpickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise UnpicklableOperationError(
            f"cannot pickle the call to {callable_identity(function)}: {exc}. A queued job or a python "
            f"subprocess needs a picklable function and arguments: define the function at module level "
            f"and pass plain data (or a (Class, args, kwargs) tuple instead of a live calculator object), "
            f"or run locally and serially (WFL_NUM_PYTHON_SUBPROCESSES=0).") from exc
