"""Coalescing: many coroutines' requests handled in batches, by whichever of them came first.

The system's submissions and the database's claims both want this: hundreds of job
coroutines each make one request at about the same moment, and one remote command (or one
transaction) should serve them all. There is no background task: the first requester to
find nobody at work becomes the worker, gathers what is pending, hands the batch to
``handle``, and steps down once its own request is settled; a waiting requester then takes
over. Everyone else waits only for their own request, which ``handle`` may settle early.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["Coalescer", "Pending"]


@dataclass(kw_only=True)
class Pending:
    """A request's settlement: ``handle`` calls :meth:`settle` once it is done (or failed)."""

    done: anyio.Event = field(default_factory=anyio.Event)
    wake: anyio.Event = field(default_factory=anyio.Event)
    """Set when settled, or when the worker steps down (then someone must take over)."""
    error: BaseException | None = None

    def settle(self, error: BaseException | None = None) -> None:
        if error is not None:
            self.error = error
        self.done.set()
        self.wake.set()


P = TypeVar("P", bound=Pending)


class Coalescer(Generic[P]):
    """Runs ``handle(batch)`` for requests made concurrently.

    :param handle: settles every request of the batch (a request it leaves unsettled is
        failed with the exception it raised, or with a RuntimeError)
    :param gather: awaited before each batch is taken, with the pending list, to let more
        requests arrive (default: one pass of the event loop)
    :param max_batch: most requests per batch
    """

    def __init__(self, handle: Callable[[list[P]], Awaitable[None]], *,
                 gather: Callable[[list[P]], Awaitable[None]] | None = None, max_batch: int = 1000) -> None:
        self._handle = handle
        self._gather = gather or _one_tick
        self._max_batch = max_batch
        self._pending: list[P] = []
        self._busy = False

    def pending_count(self) -> int:
        return len(self._pending)

    async def __call__(self, request: P) -> None:
        """Have ``request`` handled as part of a batch; re-raises the error it was settled with."""
        self._pending.append(request)
        while not request.done.is_set():
            if self._busy:
                request.wake = anyio.Event()
                await request.wake.wait()
                continue
            self._busy = True
            try:
                while not request.done.is_set():
                    await self._gather(self._pending)
                    batch = self._pending[:self._max_batch]
                    self._pending = self._pending[self._max_batch:]
                    await self._handle_or_fail(batch)
            finally:
                self._busy = False
                for item in self._pending:
                    item.wake.set()
        if request.error is not None:
            raise request.error

    async def _handle_or_fail(self, batch: list[P]) -> None:
        try:
            await self._handle(batch)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else RuntimeError(f"interrupted: {exc!r}")
            for item in batch:
                if not item.done.is_set():
                    item.settle(failure)
            if not isinstance(exc, Exception):
                raise
        for item in batch:
            if not item.done.is_set():
                item.settle(RuntimeError("request left unsettled by its batch handler"))


async def _one_tick(pending: list[P]) -> None:
    await anyio.lowlevel.checkpoint()
