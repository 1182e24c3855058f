"""autoparallelize: apply an operation to many inputs, locally in a pool or as queued jobs.

Same call style and semantics as wfl 0.3.5's ``wfl.autoparallelize.autoparallelize``. Like
every autoparallelized operation, it can be used three ways::

    autoparallelize(op, inputs, outputs, *args, **kwargs)             # synchronous
    await autoparallelize.aio(op, inputs, outputs, *args, **kwargs)   # in async code
    async for chunk in autoparallelize.iter(op, inputs, outputs, ...):  # ChunkResults as
        ...                                                             # chunks finish

Everything that needs no I/O (argument parsing, AutoparaInfo defaults, choosing local or
remote, validating ``WFL_EXPYRE_INFO``) happens when the call is made, in the caller's
thread, so bad input fails at once and the call stack is the caller's.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase.atoms import Atoms

from .._configset._wfl_compat import from_wfl
from .._sync import run_sync
from ..configset import ConfigSet, OutputSpec
from ..errors import ConfigurationError
from .autoparainfo import AutoparaInfo
from .chunk import ChunkResult
from .expyre_info import caller_stack_labels, resolve_remote_info
from .remoteinfo import RemoteInfo
from .utils import split_rng

__all__ = ["PreparedCall", "autoparallelize", "autoparallelize_docstring", "prepare_call"]

log = logging.getLogger(__name__)

DefaultAutoparaInfo = Mapping[str, Any] | Callable[[tuple[Any, ...], dict[str, Any]], Mapping[str, Any]] | None


@dataclass
class PreparedCall:
    """An autoparallelized call, parsed and resolved, ready to run.

    :ivar op: the low-level operation
    :ivar inputs: the inputs, as given (usually a ConfigSet)
    :ivar outputs: where outputs go, or None
    :ivar args: positional arguments of ``op`` other than the inputs
    :ivar kwargs: keyword arguments of ``op`` as given (``rng`` included)
    :ivar autopara_info: a copy of the caller's AutoparaInfo with every default filled in,
        and ``remote_info`` set to the resolved RemoteInfo
    :ivar remote_info: the RemoteInfo to run with, or None to run locally
    :ivar wait_for_results: False (wfl's call keyword) submits the queued jobs and returns None;
        an identical later call collects them
    """

    op: Callable[..., Any]
    inputs: Any
    outputs: OutputSpec | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    autopara_info: AutoparaInfo
    remote_info: RemoteInfo | None
    wait_for_results: bool = True

    def op_name(self) -> str:
        module = inspect.getmodule(self.op)
        return f"{module.__name__ if module else '?'}.{getattr(self.op, '__name__', repr(self.op))}"

    def already_done(self) -> bool:
        """True if the output is complete from an earlier run and must not be overwritten."""
        return self.outputs is not None and not self.outputs.overwrite and self.outputs.all_written()


def _parameters(op: Callable[..., Any]) -> Mapping[str, Any]:
    try:
        return inspect.signature(op).parameters
    except (TypeError, ValueError):
        return {}


def _split_inputs_outputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, tuple[Any, ...]]:
    """wfl's rules: ``inputs`` keyword implies ``outputs`` keyword; else both positional, in order."""
    rest = list(args)
    try:
        if "inputs" in kwargs:
            inputs = kwargs.pop("inputs")
            outputs = kwargs.pop("outputs")
        else:
            inputs = rest.pop(0)
            outputs = kwargs.pop("outputs") if "outputs" in kwargs else rest.pop(0)
    except (KeyError, IndexError):
        raise ConfigurationError("an autoparallelized operation is called as op(inputs, outputs, *args, **kwargs); "
                                 "inputs and outputs are both required (outputs may be None)") from None
    return inputs, outputs, tuple(rest)


def prepare_call(op: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *,
                 default_autopara_info: DefaultAutoparaInfo = None,
                 autopara_info: AutoparaInfo | Mapping[str, Any] | None = None,
                 stack: list[str] | None = None) -> PreparedCall:
    """Parse an autoparallelized call and decide where it runs.

    :param default_autopara_info: the operation's defaults, or a function of the op's
        (args, kwargs) returning them (e.g. ``calculate`` takes them from the calculator)
    :param stack: call-stack labels for ``WFL_EXPYRE_INFO`` matching (default: the caller's)
    :raises ConfigurationError: malformed arguments, AutoparaInfo or remote info
    """
    kwargs = dict(kwargs)
    # wfl's keyword of the call itself, unless the operation has an argument of that name
    wait_for_results = (bool(kwargs.pop("wait_for_results", True))
                        if "wait_for_results" not in _parameters(op) else True)
    inputs, outputs, op_args = _split_inputs_outputs(args, kwargs)
    inputs, outputs = from_wfl(inputs), from_wfl(outputs)  # a script may still pass wfl's
    if outputs is not None and not isinstance(outputs, OutputSpec):
        raise ConfigurationError(f"autoparallelize requires outputs be None or an OutputSpec, got {type(outputs)}")
    _check_file_counts(inputs, outputs)
    if autopara_info is None:
        info = AutoparaInfo()
    elif isinstance(autopara_info, AutoparaInfo):
        info = autopara_info.copy()
    elif isinstance(autopara_info, Mapping):
        info = AutoparaInfo(**autopara_info)
    else:
        raise ConfigurationError(f"autopara_info must be an AutoparaInfo or a dict, got {type(autopara_info)}")
    defaults = default_autopara_info(op_args, kwargs) if callable(default_autopara_info) else default_autopara_info
    info.update_defaults(defaults)
    if isinstance(info.iterable_arg, int) and len(op_args) < info.iterable_arg:
        raise ConfigurationError(f"iterable_arg={info.iterable_arg} but only {len(op_args)} positional arguments "
                                 f"were given to {getattr(op, '__name__', op)}")
    if stack is None:
        stack = caller_stack_labels(sys._getframe(1))
    remote_info = resolve_remote_info(info.remote_info, info.remote_label, stack=stack)
    info.remote_info = remote_info
    return PreparedCall(op=op, inputs=inputs, outputs=outputs, args=op_args, kwargs=kwargs,
                        autopara_info=info, remote_info=remote_info, wait_for_results=wait_for_results)


def _check_file_counts(inputs: Any, outputs: OutputSpec | None) -> None:
    """A list of output files mirrors the inputs' top level one to one: check that before running anything.

    The first index of each input's location picks its output file, so ``OutputSpec([...])``
    needs one file per input file (or per top-level sub-list); a single name given as a
    string collects everything.
    """
    if outputs is None or outputs.files is None or outputs.single_file:
        return
    out_files = outputs.files
    in_items = inputs.items if isinstance(inputs, ConfigSet) else None
    if isinstance(in_items, list) and len(in_items) == len(out_files):
        return
    if isinstance(in_items, list) and in_items and isinstance(in_items[0], Path):
        got = f"{len(in_items)} input files"
    elif isinstance(in_items, list) and in_items and not isinstance(in_items[0], Atoms):
        got = f"{len(in_items)} top-level sub-lists"
    else:
        got = "inputs that are not a list of files or sub-lists" if len(out_files) > 1 else \
            "inputs that are not one file or one sub-list"
    names = [str(f) for f in out_files]
    raise ConfigurationError(
        f"OutputSpec({names!r}) has {len(out_files)} output file(s) but the ConfigSet has {got}; a list of "
        f"output files must match the input files (or top-level sub-lists) one to one. Give one file per "
        f"input file, or a single file name as a string (OutputSpec({names[0]!r})) to collect every output.")


def _report_reuse(call: PreparedCall) -> None:
    # a skipped call advances the caller's rng exactly as running it would (one spawn, as wfl),
    # so the random numbers of every later step of a rerun script are the ones of the first run
    split_rng(dict(call.kwargs))
    sys.stderr.write(f"Reusing existing output instead of doing {call.op_name()} since overwrite=False "
                     f"and output is done\n")


@contextlib.asynccontextmanager
async def _sole_writer(outputs: OutputSpec | None) -> AsyncIterator[None]:
    """Hold ``outputs``' files for this call; while another process writes them, wait for it.

    The same script started twice on the same output: one writes, the other waits and then
    finds the output complete (and reuses it), or, if the first failed, goes on itself (its
    jobs re-attach to the ones already queued). Never a mixed file or a crash.
    """
    import anyio

    if outputs is None:
        yield
        return
    told = False
    while (holder := await anyio.to_thread.run_sync(outputs.try_claim)) is not None:
        if not told:
            log.warning("output %s is being written by %s; waiting for it to finish",
                        [str(p) for p in outputs.final_paths()], holder)
            told = True
        await anyio.sleep(0.5)
    try:
        yield
    finally:
        outputs.release()


async def run_call(call: PreparedCall) -> ConfigSet | None:
    """Run a prepared call to the end (waiting first while another process writes the same output).

    :return: ConfigSet of the outputs (empty if the operation produced none), or None if
        ``outputs`` is None
    """
    async with _sole_writer(call.outputs):
        return await _run_call(call)


async def _run_call(call: PreparedCall) -> ConfigSet | None:
    import anyio.to_thread

    if await anyio.to_thread.run_sync(call.already_done):  # file-system checks stay off the loop
        _report_reuse(call)
        assert call.outputs is not None
        return await anyio.to_thread.run_sync(call.outputs.to_ConfigSet)
    if call.remote_info is not None:
        from . import remote  # type: ignore[attr-defined,unused-ignore]  # lazy: pulls in jobs and systems

        if not call.wait_for_results:
            await remote.submit_remote(op=call.op, inputs=call.inputs, args=call.args, kwargs=call.kwargs,
                                       autopara_info=call.autopara_info, remote_info=call.remote_info)
            return None
        if call.outputs is None:  # side effects only: nothing to return
            async for _ in remote.iter_remote(op=call.op, inputs=call.inputs, outputs=None, args=call.args,
                                              kwargs=call.kwargs, autopara_info=call.autopara_info,
                                              remote_info=call.remote_info):
                pass
            return None
        return await remote.run_remote(op=call.op, inputs=call.inputs, outputs=call.outputs, args=call.args,
                                       kwargs=call.kwargs, autopara_info=call.autopara_info,
                                       remote_info=call.remote_info)
    from ._local import LocalRun  # anyio is imported only when something runs

    run = LocalRun(call.op, call.inputs, call.outputs, call.args, call.kwargs, call.autopara_info)
    chunks = run.chunks()
    async with contextlib.aclosing(chunks):
        async for _ in chunks:
            pass
    return run.result


async def iter_call(call: PreparedCall) -> AsyncGenerator[ChunkResult, None]:
    """Run a prepared call, yielding each chunk's results as it finishes (any order).

    Outputs are stored into ``call.outputs`` as well, which is closed when the iteration
    completes; stopping early leaves no final output file. If the output was already
    complete, nothing runs and nothing is yielded (read ``outputs.to_ConfigSet()``).
    """
    async with _sole_writer(call.outputs), contextlib.aclosing(_iter_call(call)) as chunks:
        async for chunk in chunks:
            yield chunk


async def _iter_call(call: PreparedCall) -> AsyncGenerator[ChunkResult, None]:
    import anyio.to_thread

    if await anyio.to_thread.run_sync(call.already_done):
        _report_reuse(call)
        return
    chunks: AsyncIterator[ChunkResult]
    if call.remote_info is not None:
        from . import remote  # type: ignore[attr-defined,unused-ignore]

        chunks = remote.iter_remote(op=call.op, inputs=call.inputs, outputs=call.outputs, args=call.args,
                                    kwargs=call.kwargs, autopara_info=call.autopara_info,
                                    remote_info=call.remote_info)
    else:
        from ._local import LocalRun

        chunks = LocalRun(call.op, call.inputs, call.outputs, call.args, call.kwargs, call.autopara_info).chunks()
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        # close the inner iterator when ours is closed early, not whenever it is garbage-collected
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class _Autoparallelize:
    """``autoparallelize(op, inputs, outputs, *args, default_autopara_info=None, autopara_info=None, **kwargs)``

    Apply ``op`` to every item of ``inputs`` in chunks, locally in a process pool
    (``WFL_NUM_PYTHON_SUBPROCESSES``) or as queued jobs (``RemoteInfo`` in
    ``autopara_info``, or ``WFL_EXPYRE_INFO``), storing the outputs in ``outputs``.

    ``op`` takes a list of items (at position ``iterable_arg``) and returns one output per
    item. If it takes ``_autopara_per_item_info``, it receives a list of dicts, one per
    item, always with ``item_i`` and, if an ``rng`` keyword was passed, ``rng``: an
    independent ``numpy.random.Generator`` per item.

    ``inputs`` and ``outputs`` may also be given as keywords (then both must be). If
    ``outputs`` is already completely written and ``overwrite`` is False, nothing runs.

    Three ways to call: ``autoparallelize(...)`` returns the output ConfigSet;
    ``await autoparallelize.aio(...)`` is the same in async code; ``autoparallelize.iter(...)``
    is an async iterator of :class:`ChunkResult` as chunks finish.

    :param op: the low-level operation (module-level, so that it can be pickled)
    :param default_autopara_info: the operation's AutoparaInfo defaults (dict)
    :param autopara_info: AutoparaInfo or dict of its fields, overriding the defaults
    :return: ConfigSet of the outputs, or None if ``outputs`` is None
    :raises ConfigurationError: bad arguments or remote configuration (before anything runs)
    """

    def _prepare(self, op: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 default_autopara_info: DefaultAutoparaInfo, autopara_info: Any) -> PreparedCall:
        return prepare_call(op, args, kwargs, default_autopara_info=default_autopara_info,
                            autopara_info=autopara_info, stack=caller_stack_labels(sys._getframe(2)))

    def __call__(self, op: Callable[..., Any], *args: Any, default_autopara_info: DefaultAutoparaInfo = None,
                 autopara_info: Any = None, **kwargs: Any) -> ConfigSet | None:
        call = self._prepare(op, args, kwargs, default_autopara_info, autopara_info)
        return run_sync(run_call, call)

    def aio(self, op: Callable[..., Any], *args: Any, default_autopara_info: DefaultAutoparaInfo = None,
            autopara_info: Any = None, **kwargs: Any) -> Coroutine[Any, Any, ConfigSet | None]:
        """Awaitable form: ``await autoparallelize.aio(op, inputs, outputs, ...)``."""
        call = self._prepare(op, args, kwargs, default_autopara_info, autopara_info)
        return run_call(call)

    def iter(self, op: Callable[..., Any], *args: Any, default_autopara_info: DefaultAutoparaInfo = None,
             autopara_info: Any = None, **kwargs: Any) -> AsyncGenerator[ChunkResult, None]:
        """Async iterator form: ``async for chunk in autoparallelize.iter(op, inputs, outputs, ...)``."""
        call = self._prepare(op, args, kwargs, default_autopara_info, autopara_info)
        return iter_call(call)

    def __repr__(self) -> str:
        return "<autoparallelize>"


autoparallelize = _Autoparallelize()


def autoparallelize_docstring(wrapped_func: Callable[..., Any], wrappable_func: Callable[..., Any],
                              input_iterable_type: str, input_arg: int | str = 0) -> None:
    """Give a wfl-style wrapper ``def op(*args, **kwargs): return autoparallelize(...)`` a docstring.

    Kept for wfl compatibility; the docstring says how ``inputs``/``outputs`` replace the
    low-level function's input argument, followed by that function's own docstring.
    """
    wrapped_func.__doc__ = (
        f"Autoparallelized {getattr(wrappable_func, '__name__', 'operation')}: called as "
        f"(inputs, outputs, *args, autopara_info=None, **kwargs), where inputs (iterable of "
        f"{input_iterable_type}) and outputs (OutputSpec or None) replace argument {input_arg!r} "
        f"below. Returns the output ConfigSet.\n\n" + (wrappable_func.__doc__ or ""))
