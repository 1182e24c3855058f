"""Gathering a batch from requests that arrive one after another (the jobs of one call)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ..scheduler.base import MAX_BATCH

__all__ = ["FIRST_BATCH", "BatchFull", "gather_arrivals", "resend_after"]

T = TypeVar("T")


class BatchFull(Exception):
    """Raised by a ``take`` function: the batch must go now (e.g. the queue window is full)."""


FIRST_BATCH = 20
"""Most items in a first batch (see :func:`gather_arrivals`)."""


async def gather_arrivals(batch: list[T], take: Callable[[], T], *, window: float, longest: float,
                          limit: int = MAX_BATCH, first: bool = False) -> None:
    """Extend ``batch`` while items keep arriving: every ``window`` s take all that are there.

    Stops after a window that brought none, after ``longest`` s, at ``limit`` items, or when
    ``take`` raises :class:`BatchFull`. ``take`` raises :class:`anyio.WouldBlock` when nothing
    is there now.

    :param first: nothing of this kind is in flight (the first batch of a call): the batch goes
        with at most :data:`FIRST_BATCH` items, so its jobs start while the rest of the call is
        staged and sent in the next (full) batch; the first result then does not wait for the
        whole call to be staged. It costs one command more per call.
    """
    if first:
        limit = min(limit, FIRST_BATCH)
    waited = 0.0
    while len(batch) < limit and waited < longest:
        await anyio.sleep(window)
        waited += window
        before = len(batch)
        while len(batch) < limit:
            try:
                batch.append(take())
            except anyio.WouldBlock:
                break
            except BatchFull:
                return
        if len(batch) == before:
            return


async def resend_after(send: MemoryObjectSendStream[T], item: T, delay: float) -> None:
    """Put ``item`` back on its loop's stream after ``delay`` s (a retry after a jittered backoff)."""
    await anyio.sleep(delay)
    send.send_nowait(item)
