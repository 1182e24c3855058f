"""gather_arrivals: how a batch of requests that arrive together is cut."""

from __future__ import annotations

import math

import anyio

from wfl_async.system.batching import FIRST_BATCH, BatchFull, gather_arrivals


def _stream_of(n: int) -> anyio.abc.ObjectReceiveStream[int]:
    send, receive = anyio.create_memory_object_stream[int](math.inf)
    for i in range(n):
        send.send_nowait(i)
    return receive


async def test_a_batch_takes_everything_there_up_to_the_limit() -> None:
    receive = _stream_of(50)
    batch = [receive.receive_nowait()]
    await gather_arrivals(batch, receive.receive_nowait, window=0.01, longest=1.0, limit=30)
    assert batch == list(range(30))
    batch = [receive.receive_nowait()]
    await gather_arrivals(batch, receive.receive_nowait, window=0.01, longest=1.0)
    assert batch == list(range(30, 50))


async def test_a_first_batch_goes_with_at_most_first_batch_items_the_rest_in_the_next() -> None:
    receive = _stream_of(FIRST_BATCH + 40)
    batch = [receive.receive_nowait()]
    await gather_arrivals(batch, receive.receive_nowait, window=0.01, longest=1.0, first=True)
    assert batch == list(range(FIRST_BATCH))
    batch = [receive.receive_nowait()]
    await gather_arrivals(batch, receive.receive_nowait, window=0.01, longest=1.0)
    assert batch == list(range(FIRST_BATCH, FIRST_BATCH + 40))


async def test_batch_full_ends_the_batch_at_once() -> None:
    receive = _stream_of(10)
    taken = 0

    def take() -> int:
        nonlocal taken
        if taken == 3:
            raise BatchFull
        taken += 1
        return receive.receive_nowait()

    batch = [receive.receive_nowait()]
    await gather_arrivals(batch, take, window=0.01, longest=1.0)
    assert batch == [0, 1, 2, 3]
