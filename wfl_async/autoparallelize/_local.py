"""Drive the local pool (:mod:`.pool`) from async code without blocking the event loop.

Each step (compute the next chunk, store it into the OutputSpec) runs in a worker thread
through ``anyio.to_thread.run_sync``. When the caller is cancelled (or stops iterating),
a flag tells the pool to stop, and we wait, shielded, until its subprocesses are gone.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Generator
from typing import Any

import anyio
import anyio.to_thread

from ..configset import ConfigSet, OutputSpec
from .autoparainfo import AutoparaInfo
from .chunk import ChunkResult
from .pool import OrderedStorer, iter_pool_chunks
from .utils import split_rng

__all__ = ["LocalRun"]

_DONE = object()


class LocalRun:
    """One autoparallelized call run locally; iterate it, then read :attr:`result`."""

    def __init__(self, op: Any, inputs: Any, outputs: OutputSpec | None, args: tuple[Any, ...],
                 kwargs: dict[str, Any], autopara_info: AutoparaInfo) -> None:
        self._op = op
        self._inputs = inputs
        self._args = args
        self._kwargs, self._rng = split_rng(kwargs)
        self._info = autopara_info
        self._storer = OrderedStorer(outputs, autopara_info.skip_failed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._chunks: Generator[ChunkResult, None, None] | None = None
        self.result: ConfigSet | None = None

    def _step(self) -> Any:
        with self._lock:
            if self._stop.is_set():
                return _DONE
            if self._chunks is None:
                info = self._info
                self._chunks = iter_pool_chunks(
                    info.num_python_subprocesses, info.num_inputs_per_python_subprocess, self._inputs, self._op,
                    info.iterable_arg, info.initializer, self._rng, self._args, self._kwargs,
                    should_stop=self._stop.is_set)
            chunk = next(self._chunks, None)
            if chunk is None:
                self.result = self._storer.finish()
                return _DONE
            self._storer.add(chunk)
            return chunk

    def _shutdown(self) -> None:
        self._stop.set()
        with self._lock:  # waits for a step still running in an abandoned thread
            if self._chunks is not None:
                self._chunks.close()  # winds the pool down: its running groups finish, no other starts

    def __aiter__(self) -> AsyncGenerator[ChunkResult, None]:
        return self.chunks()

    async def chunks(self) -> AsyncGenerator[ChunkResult, None]:
        """The chunks as they finish; close it (or run it to the end) to release the pool."""
        finished = False
        try:
            while True:
                chunk = await anyio.to_thread.run_sync(self._step, abandon_on_cancel=True)
                if chunk is _DONE:
                    finished = True
                    return
                yield chunk
        finally:
            if not finished:
                self._stop.set()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._shutdown)
