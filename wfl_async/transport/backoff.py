"""The one schedule both ssh transports retry a connection on: jittered, doubling pauses within a budget."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator

import anyio

__all__ = ["retry_attempts"]


async def retry_attempts(budget: float, first_wait: float, max_delay: float,
                   max_attempts: int | None = None) -> AsyncIterator[int]:
    """Attempt numbers 1, 2, ...; jittered exponential pauses between them, until ``budget`` seconds are spent.

    :param first_wait: the first pause (doubling after each, up to ``max_delay``)
    :param max_attempts: stop after this many, even with budget left
    """
    deadline = time.monotonic() + budget
    delay = first_wait
    attempt = 1
    while True:
        yield attempt
        attempt += 1
        pause = delay * random.uniform(0.5, 1.0)
        if (max_attempts is not None and attempt > max_attempts) or time.monotonic() + pause > deadline:
            return
        await anyio.sleep(pause)
        delay = min(delay * 2, max_delay)
