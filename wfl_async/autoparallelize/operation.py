"""AutoparaOperation: turns a low-level function into an autoparallelized operation.

Every operation (``calculate``, ``optimize``, ``md``, and any a user defines) works three
ways, with the same arguments, ``op(inputs, outputs, *args, autopara_info=None, **kwargs)``::

    configs = optimize(inputs, outputs, calculator=calc)               # synchronous
    configs = await optimize.aio(inputs, outputs, calculator=calc)     # async code
    async for chunk in optimize.iter(inputs, outputs, calculator=calc):  # ChunkResults,
        ...                                                              # as chunks finish

Define one with::

    def _run(atoms, calculator, fmax=1e-3): ...   # module level: must be picklable
    relax = AutoparaOperation(_run, name="relax", default_autopara_info={"num_inputs_per_python_subprocess": 10})

For ``WFL_EXPYRE_INFO`` stack matching the operation counts as the function
``<file defining _run>::<name>`` called from the caller's frame, like a wfl wrapper
function ``def relax(*args, **kwargs): return autoparallelize(_run, *args, **kwargs)``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from .._sync import run_sync
from ..configset import ConfigSet
from .base import DefaultAutoparaInfo, PreparedCall, iter_call, prepare_call, run_call
from .chunk import ChunkResult
from .expyre_info import caller_stack_labels

__all__ = ["AutoparaOperation"]


_USAGE = """Autoparallelized operation; the first argument of the function below is replaced by
    ``inputs`` (a ConfigSet or other iterable) and ``outputs`` (an OutputSpec or None), and
    ``autopara_info`` (AutoparaInfo or dict) may be given. Three forms, same arguments::

        {name}(inputs, outputs, ...)                  # returns the output ConfigSet
        await {name}.aio(inputs, outputs, ...)        # in async code
        async for chunk in {name}.iter(inputs, outputs, ...):  # ChunkResult per finished chunk

    """


def _lookup(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


class AutoparaOperation:
    """An autoparallelized operation: call it, ``await op.aio(...)``, or ``async for c in op.iter(...)``.

    :param op: the low-level function, taking a list of inputs (at ``iterable_arg``) and
        returning one output per input; must be defined at module level
    :param name: public name of the operation (default: ``op.__name__``); with ``module``
        it must name this object, so that it pickles by reference
    :param module: module the operation is published in (default: ``op.__module__``)
    :param default_autopara_info: AutoparaInfo defaults for this operation, or a function
        of the operation's (args, kwargs) returning them
    :param doc: docstring (default: ``op.__doc__``)
    """

    def __init__(self, op: Callable[..., Any], *, name: str | None = None, module: str | None = None,
                 default_autopara_info: DefaultAutoparaInfo = None, doc: str | None = None) -> None:
        self.op = op
        self.__name__ = name or op.__name__
        self.__qualname__ = self.__name__
        self.__module__ = module or op.__module__
        self.__doc__ = doc if doc is not None else _USAGE.format(name=self.__name__) + (op.__doc__ or "")
        self.default_autopara_info = default_autopara_info
        self.stack_label = f"{inspect.getfile(op)}::{self.__name__}"

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> PreparedCall:
        autopara_info = kwargs.pop("autopara_info", None)
        stack = caller_stack_labels(sys._getframe(2)) + [self.stack_label]
        return prepare_call(self.op, args, kwargs, default_autopara_info=self.default_autopara_info,
                            autopara_info=autopara_info, stack=stack)

    def __call__(self, *args: Any, **kwargs: Any) -> ConfigSet | None:
        """Run synchronously (works inside a running event loop too); return the output ConfigSet."""
        return run_sync(run_call, self._prepare(args, kwargs))

    def aio(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, ConfigSet | None]:
        """Awaitable form; arguments are checked when called, before awaiting."""
        return run_call(self._prepare(args, kwargs))

    def iter(self, *args: Any, **kwargs: Any) -> AsyncGenerator[ChunkResult, None]:
        """Async iterator of :class:`ChunkResult`, one per chunk as it finishes."""
        return iter_call(self._prepare(args, kwargs))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_lookup, (self.__module__, self.__name__))

    def __repr__(self) -> str:
        return f"<autoparallelized operation {self.__module__}.{self.__name__}>"
