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
        plain = _plain_dumps(payload, once)
        if plain is not None:
            return plain
        buffer = io.BytesIO()
        _once_pickler()(buffer, once).dump(payload)
        return buffer.getvalue()
    except Exception as exc:
        raise UnpicklableOperationError(
            f"cannot pickle the call to {callable_identity(function)}: {exc}. A queued job or a python "
            f"subprocess needs a picklable function and arguments: define the function at module level "
            f"and pass plain data (or a (Class, args, kwargs) tuple instead of a live calculator object), "
            f"or run locally and serially (WFL_NUM_PYTHON_SUBPROCESSES=0).") from exc


class _Pickled:
    """An object of :data:`PickledOnce` in a payload: unpickled from its bytes (as :func:`_once_pickler` puts it)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return pickle.loads, (self.data,)


class _Swapper:
    """Puts the objects of a :data:`PickledOnce` in a payload's first two levels in as their bytes,
    keeping which bytes went in."""

    def __init__(self, once: PickledOnce) -> None:
        self.once = once
        self.embedded: dict[int, bytes] = {}

    def payload(self, payload: Any) -> Any:
        return self._one(self._level(payload)) if type(payload) is not tuple else \
            tuple(self._one(self._level(item)) for item in payload)

    def _level(self, obj: Any) -> Any:
        if type(obj) is dict:
            return {key: self._one(value) for key, value in obj.items()}
        if type(obj) in (tuple, list):
            return type(obj)(self._one(item) for item in obj)
        return obj

    def _one(self, obj: Any) -> Any:
        hit = self.once.get(id(obj))
        if hit is None or hit[0] is not obj:
            return obj
        self.embedded[id(hit[1])] = hit[1]
        return _Pickled(hit[1])


def _plain_dumps(payload: Any, once: PickledOnce) -> bytes | None:
    """``payload`` pickled by the standard (C) pickler, the objects of ``once`` found in its first levels
    put in as their bytes; None when only cloudpickle can send it as the other side needs it.

    The standard pickler is several times faster than cloudpickle's (which calls Python for every object
    of the payload: at 10^3-10^5 chunks of a call, pickling each chunk's configurations was a tenth of the
    driver's time, issue 16), and pickles what it can pickle as cloudpickle does but for one difference:
    a function or class of ``__main__`` (the user's script) it sends by reference, which the other side
    cannot import; cloudpickle sends those by value. So a payload naming ``__main__`` outside the bytes
    put in, or pickled while a module is registered to go by value, goes to cloudpickle, as does one the
    standard pickler refuses (a lambda, a closure, a local class).
    """
    import cloudpickle

    if cloudpickle.list_registry_pickle_by_value():
        return None
    swapper = _Swapper(once)
    try:
        data = pickle.dumps(swapper.payload(payload), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    named = sum(part.count(_MAIN) for part in swapper.embedded.values())
    return data if data.count(_MAIN) == named else None


_MAIN = b"__main__"


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

