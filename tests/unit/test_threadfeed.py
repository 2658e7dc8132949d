"""The event loop → worker thread byte feed behind snapshot restores."""

from __future__ import annotations

import asyncio

import pytest

from trove_api.runtimes.threadfeed import Aborted, ThreadFedReader


async def test_reads_the_stream_in_order_with_bounded_room() -> None:
    reader = ThreadFedReader(depth=2)
    await reader.put(b"ab")
    await reader.put(b"cd")
    third = asyncio.create_task(reader.put(b"ef"))
    await asyncio.sleep(0.05)
    assert not third.done()  # two chunks wait: the third waits for room
    assert await asyncio.to_thread(reader.read, 1) == b"a"
    await asyncio.wait_for(third, 2)  # the thread took a chunk: room again
    reader.end()
    assert await asyncio.to_thread(reader.read) == b"b"
    assert await asyncio.to_thread(reader.read, 100) == b"cd"
    assert await asyncio.to_thread(reader.read) == b"ef"
    assert await asyncio.to_thread(reader.read) == b""  # end of stream, and it stays ended
    assert await asyncio.to_thread(reader.read) == b""


async def test_abort_stops_the_reading_thread_with_its_cause() -> None:
    reader = ThreadFedReader(depth=2)
    reading = asyncio.create_task(asyncio.to_thread(reader.read))
    reader.abort(ValueError("upstream broke"))
    with pytest.raises(Aborted) as caught:
        await asyncio.wait_for(reading, 2)
    assert isinstance(caught.value.__cause__, ValueError)


async def test_a_stopped_worker_frees_a_waiting_feeder() -> None:
    reader = ThreadFedReader(depth=1)
    await reader.put(b"x")
    waiting = asyncio.create_task(reader.put(b"y"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    reader.worker_stopped()  # e.g. the tar checker refused the stream and reads no more
    await asyncio.wait_for(waiting, 2)
