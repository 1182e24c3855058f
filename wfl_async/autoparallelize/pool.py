"""Run an operation over inputs in this machine's python subprocesses (or serially).

This is what an autoparallelized call does locally, and what every remote chunk job runs,
so it imports nothing asynchronous (no anyio, no asyncssh): a queued job's start-up time
is paid once per job.

Results are identical to wfl 0.3.5's ``do_in_pool``: the same grouping, the same per-item
random generators, and outputs stored in input order.
"""

from __future__ import annotations

import functools
import inspect
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

from .._pickling import dumps_call
from ..configset import ConfigSet, OutputSpec
from .chunk import ChunkResult
from .pool_env import check_pool_environment, pool_start
from .utils import ItemInput, items_inputs_generator, set_autopara_per_item_info

__all__ = ["OrderedStorer", "do_in_pool", "iter_pool_chunks", "num_python_subprocesses_from_env"]

_POLL_SECONDS = 0.5  # how often a waiting pool checks should_stop
_WIND_DOWN_NOTICE_SECONDS = 10.0  # a wind-down waiting longer than this says what it waits for


def num_python_subprocesses_from_env() -> int:
    """``WFL_NUM_PYTHON_SUBPROCESSES`` as an int, 0 (serial) if unset or empty."""
    return int(os.environ.get("WFL_NUM_PYTHON_SUBPROCESSES", "") or 0)


def _run_group(op: Callable[..., Any], iterable_arg: int | str | None,
               inherited_per_item_info: list[dict[str, Any]] | None, args: Sequence[Any],
               kwargs: dict[str, Any], indexed_group: tuple[int, tuple[ItemInput, ...]]) -> ChunkResult:
    """Call ``op`` once on a group of items (module level, so a Pool can pickle it)."""
    chunk_index, group = indexed_group
    items = [entry[0] for entry in group]
    item_indices = [entry[1] for entry in group]
    set_autopara_per_item_info(kwargs, op, inherited_per_item_info, [entry[3] for entry in group], item_indices)
    if isinstance(iterable_arg, int):
        call_args = (*args[:iterable_arg], items, *args[iterable_arg:])
    else:
        call_args = tuple(args)
        if iterable_arg is not None:
            kwargs[iterable_arg] = items
    outputs = op(*call_args, **kwargs)
    results = [None] * len(items) if outputs is None else list(outputs)
    if len(results) != len(items):
        raise RuntimeError(f"{getattr(op, '__name__', op)} returned {len(results)} outputs for {len(items)} inputs")
    return ChunkResult(chunk_index=chunk_index, item_indices=tuple(item_indices),
                       input_locs=tuple(entry[2] for entry in group), results=tuple(results))


class _StopFlag:
    """A pool's "winding down" flag, in shared memory: the driver's side sets it when the iteration
    ends, a subprocess whose group took a Ctrl-C sets it too; then the pool's task thread hands out
    no more groups (:func:`_until_stopped`) and a subprocess skips any it already has (:class:`_CloudCall`)."""

    def __init__(self, context: Any) -> None:
        self._value = context.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)


_stop_flag: _StopFlag | None = None
"""In a pool's subprocess: its pool's flag (kept by :class:`_Started`)."""


class _Started:
    """Pool initializer: keep the pool's stop flag, ignore Ctrl-C between groups (:class:`_CloudCall` takes
    it during one), then run the pool's own initializer, if any."""

    def __init__(self, stop_flag: _StopFlag, initializer: Callable[..., Any] | None,
                 initargs: Sequence[Any]) -> None:
        self.stop_flag = stop_flag
        self.initializer = initializer
        self.initargs = tuple(initargs)

    def __call__(self) -> None:
        global _stop_flag
        _stop_flag = self.stop_flag
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.initializer is not None:
            self.initializer(*self.initargs)


class _CloudCall:
    """The pool's function as cloudpickle bytes, loaded once per subprocess (plain pickle carries the bytes)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._loaded: Callable[..., ChunkResult] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"payload": self.payload, "_loaded": None}

    def __call__(self, indexed_group: tuple[int, tuple[ItemInput, ...]]) -> ChunkResult | None:
        if _stop_flag is not None and _stop_flag.is_set():
            return None  # its pool is winding down: nobody reads this group's result
        if self._loaded is None:
            self._loaded = pickle.loads(self.payload)
        # Ctrl-C in a terminal reaches the subprocesses too: it ends the running group and the pool
        # (no group starts after it), and the subprocess answers None and lives on. Had it died of the KeyboardInterrupt (between groups,
        # or while holding a queue lock), its group would never answer and the pool would never end.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return self._loaded(indexed_group)
        except KeyboardInterrupt:
            if _stop_flag is not None:
                _stop_flag.set()  # so that no other subprocess starts a group meanwhile
            return None
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _op_name(op: Callable[..., Any]) -> str:
    module = inspect.getmodule(op)
    return f"{module.__name__ if module else '?'}.{getattr(op, '__name__', repr(op))}"


def iter_pool_chunks(num_python_subprocesses: int | None, num_inputs_per_python_subprocess: int,
                     iterable: Iterable[Any], op: Callable[..., Any], iterable_arg: int | str | None = 0,
                     initializer: tuple[Callable[..., Any] | None, Any] = (None, []), rng: Any = None,
                     args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> Generator[ChunkResult, None, None]:
    """Yield one :class:`ChunkResult` per group of ``num_inputs_per_python_subprocess`` inputs.

    With subprocesses, chunks are yielded as they finish (any order); serially, in order.
    ``should_stop`` is checked between chunks (and every half second while waiting for a
    subprocess); when it returns True the iteration ends. However the iteration ends (an
    operation raised, ``should_stop``, the generator closed), no group starts any more and the
    groups already running finish before the subprocesses exit (:func:`_wind_down`). As in wfl,
    ``initializer`` runs only in subprocesses, and the serial path passes the inputs themselves
    (an operation may modify them in place).
    """
    if len(initializer) != 2:
        raise ValueError(f"Bad initializer {initializer}: expected (callable, args)")
    check_pool_environment()
    kwargs = dict(kwargs or {})
    if num_python_subprocesses is None:
        num_python_subprocesses = num_python_subprocesses_from_env()
    stop = should_stop or (lambda: False)
    groups = enumerate(items_inputs_generator(iterable, num_inputs_per_python_subprocess, rng))
    inherited = kwargs.get("_autopara_per_item_info")
    run = functools.partial(_run_group, op, iterable_arg, inherited, tuple(args), kwargs)

    if num_python_subprocesses <= 0:
        for indexed_group in groups:
            if stop():
                return
            yield run(indexed_group)
        return

    sys.stderr.write(f"Running {_op_name(op)} with num_python_subprocesses={num_python_subprocesses}, "
                     f"num_inputs_per_python_subprocess={num_inputs_per_python_subprocess}\n")
    context, init_kwargs = pool_start(initializer)  # WFL_TORCH_N_GPUS: one device per subprocess
    # the call travels as cloudpickle bytes, as to a queued job: an operation defined in the user's
    # script (or, inside a job, one that came by value from the driver's __main__) works here too
    call = _CloudCall(dumps_call(op, run))
    stop_flag = _StopFlag(context)
    started = _Started(stop_flag, init_kwargs.get("initializer"), init_kwargs.get("initargs", ()))
    # the with block's terminate() comes after _wind_down: it finds no subprocess left to kill
    with context.Pool(num_python_subprocesses, initializer=started) as pool:
        try:
            results = pool.imap_unordered(call, _until_stopped(groups, stop_flag))
            while True:
                try:
                    chunk = results.next(timeout=_POLL_SECONDS)
                except multiprocessing.TimeoutError:
                    if stop():
                        return
                    continue
                except StopIteration:
                    break
                if chunk is None:  # a subprocess's group ended by Ctrl-C (a skipped one's None comes later)
                    if stop():
                        return
                    raise KeyboardInterrupt("a python subprocess of the pool was interrupted (SIGINT)")
                yield chunk
                if stop():
                    return
        finally:
            _wind_down(pool, stop_flag)


def _wind_down(pool: Any, stop_flag: _StopFlag) -> None:
    """End ``pool`` without killing a subprocess: the groups not started are skipped, the running ones finish.

    ``Pool.terminate()`` (what leaving ``with Pool()`` early does) can hang for ever: a subprocess
    it kills while that one writes its result to the pool's result queue leaves the queue's lock
    taken and half a message in its pipe, and the pool's own threads then wait on both
    (cpython#96995, #73945). It did, in a queued chunk job whose other group was sending its
    result as the first group's exception came: the job ran on until its time limit.

    A running group may take hours, so the wait has no bound; past a few seconds it says what it
    waits for, and a Ctrl-C (the group's end) or a second one (the call's) ends it.
    """
    stop_flag.set()
    pool.close()
    joining = threading.Thread(target=pool.join, name="wfl_async pool wind-down", daemon=True)
    joining.start()
    joining.join(_WIND_DOWN_NOTICE_SECONDS)
    if joining.is_alive():
        sys.stderr.write("Stopping the local pool: no group starts any more; waiting for the groups "
                         "running in its python subprocesses to finish (Ctrl-C ends them)\n")
        joining.join()


def _until_stopped(groups: Iterable[Any], stop_flag: _StopFlag) -> Generator[Any, None, None]:
    """``groups`` until the pool winds down (the pool's task thread takes them from here)."""
    for group in groups:
        if stop_flag.is_set():
            return
        yield group


class OrderedStorer:
    """Stores chunks into an OutputSpec in input (chunk) order, whatever order they arrive in.

    Input order matters only for outputs without a location (inputs that are not from a
    ConfigSet), but storing in order always gives exactly wfl's output.
    """

    def __init__(self, outputspec: OutputSpec | None, skip_failed: bool) -> None:
        self.outputspec = outputspec
        self.skip_failed = skip_failed
        self.did_work = False
        self._next = 0
        self._pending: dict[int, ChunkResult] = {}

    def add(self, chunk: ChunkResult) -> None:
        """Store ``chunk`` now if all earlier chunks are stored, else when they are."""
        self._pending[chunk.chunk_index] = chunk
        while self._next in self._pending:
            ready = self._pending.pop(self._next)
            self._next += 1
            for result, loc in zip(ready.results, ready.input_locs, strict=True):
                if self.skip_failed and result is None:
                    continue
                self.did_work = True
                if self.outputspec is not None:
                    self.outputspec.store(result, loc)

    def finish(self) -> ConfigSet | None:
        """Close the OutputSpec; the ConfigSet of what was stored (empty if nothing), or None."""
        if self._pending:
            raise RuntimeError(f"chunks {sorted(self._pending)} arrived but chunk {self._next} never did")
        if self.outputspec is None:
            return None
        self.outputspec.close()
        return self.outputspec.to_ConfigSet() if self.did_work else ConfigSet(None)


def do_in_pool(num_python_subprocesses: int | None = None, num_inputs_per_python_subprocess: int = 1,
               iterable: Iterable[Any] | None = None, outputspec: OutputSpec | None = None,
               op: Callable[..., Any] | None = None, iterable_arg: int | str | None = 0, skip_failed: bool = True,
               initializer: tuple[Callable[..., Any] | None, Any] = (None, []), rng: Any = None,
               args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> ConfigSet | None:
    """Apply ``op`` to every input, in python subprocesses or serially, storing into ``outputspec``.

    :param num_python_subprocesses: processes to use; None reads
        ``WFL_NUM_PYTHON_SUBPROCESSES`` (unset or 0: serial, in this process)
    :param num_inputs_per_python_subprocess: inputs passed to each call of ``op``
    :param iterable: inputs, usually a ConfigSet
    :param outputspec: where outputs go, or None (side effects only)
    :param op: the low-level operation; called as ``op(*args[:iterable_arg], items,
        *args[iterable_arg:], **kwargs)`` (or with ``kwargs[iterable_arg] = items``)
    :param skip_failed: do not store None outputs
    :param initializer: ``(callable, args)`` run at the start of each subprocess
    :param rng: generator from which each item's own generator is spawned
    :return: ConfigSet of the outputs (empty if none), or None without ``outputspec``
    """
    if op is None or iterable is None:
        raise ValueError("do_in_pool needs op and iterable")
    storer = OrderedStorer(outputspec, skip_failed)
    for chunk in iter_pool_chunks(num_python_subprocesses, num_inputs_per_python_subprocess, iterable, op,
                                  iterable_arg, initializer, rng, args, kwargs):
        storer.add(chunk)
    return storer.finish()
