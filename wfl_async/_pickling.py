"""Pickling an operation call to run elsewhere: one rule for queued jobs and local subprocesses.

cloudpickle sends module-level functions by reference (the other side imports their module)
and functions defined in ``__main__`` (the user's script), lambdas and closures by value, so
the same call works in a queued job, in a pool subprocess, and in a pool inside a queued job
(where the user's ``__main__`` does not exist). It is imported only when something is sent.
"""

from __future__ import annotations

import functools
import io
import pickle
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import UnpicklableOperationError

__all__ = ["PickledOnce", "callable_identity", "dumps_call", "pickled_once"]

PickledOnce = Mapping[int, tuple[Any, bytes]]
"""``id(object)`` -> the object and its cloudpickle, made once for many payloads (:func:`pickled_once`)."""


def callable_identity(function: Callable[..., Any]) -> str:
    """``module.qualname`` of a function; the type's for a partial or callable instance."""
    module = getattr(function, "__module__", None) or "?"
    name = getattr(function, "__qualname__", None)
    if name is None:
        # functools.partial or a callable instance: its repr holds a memory address, different
        # in every process; the type names it
        module, name = type(function).__module__, type(function).__qualname__
    return f"{module}.{name}"


def pickled_once(function: Callable[..., Any], objects: Iterable[Any]) -> PickledOnce:
    """Each of ``objects`` cloudpickled now, for :func:`dumps_call` to put into every payload that holds
    it as these bytes: the operation of a call is pickled once, not once per chunk (a function of
    the user's script goes by value: its code, every time)."""
    return {id(obj): (obj, dumps_call(function, obj)) for obj in objects}


def dumps_call(function: Callable[..., Any], payload: Any, once: PickledOnce | None = None) -> bytes:
    """cloudpickle ``payload`` (the call of ``function``: itself, its arguments).

    :param once: objects pickled already (:func:`pickled_once`): each goes in as its bytes, which
        the other side unpickles with ``pickle.loads`` (what it had unpickled inline)
    :raises UnpicklableOperationError: naming the function, what failed and the fix
    """
    import cloudpickle

    try:
        if not once:
            return cloudpickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        buffer = io.BytesIO()
        _once_pickler()(buffer, once).dump(payload)
        return buffer.getvalue()
    except Exception as exc:
        raise UnpicklableOperationError(
            f"cannot pickle the call to {callable_identity(function)}: {exc}. A queued job or a python "
            f"subprocess needs a picklable function and arguments: define the function at module level "
            f"and pass plain data (or a (Class, args, kwargs) tuple instead of a live calculator object), "
            f"or run locally and serially (WFL_NUM_PYTHON_SUBPROCESSES=0).") from exc


@functools.cache
def _once_pickler() -> Callable[[io.BytesIO, PickledOnce], pickle.Pickler]:
    """The pickler class, made on first use (cloudpickle is imported only when something is sent)."""
    import cloudpickle

    class OncePickler(cloudpickle.Pickler):
        """cloudpickle's pickler, putting in the objects of ``once`` as their bytes."""

        def __init__(self, file: io.BytesIO, once: PickledOnce) -> None:
            super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
            self.once = once

        def reducer_override(self, obj: Any) -> Any:
            hit = self.once.get(id(obj))
            if hit is not None and hit[0] is obj:
                return pickle.loads, (hit[1],)
            return super().reducer_override(obj)

    return OncePickler

