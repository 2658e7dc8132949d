"""Reads retried once on a fresh channel; a stream only while none of it has been sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from trove_api.runtimes.channel.retry import call_once_more_if_lost, stream_once_more_if_lost
from trove_core.errors import ChannelLostError


class Channel:
    """Each ``open`` is a fresh channel; the first ``lose_after`` chunks pass, then it drops."""

    def __init__(self, *losses: int | None) -> None:
        self.losses = list(losses)  # per channel opened: chunks before it drops (None: never)
        self.opened = 0

    async def tarball(self) -> AsyncIterator[bytes]:
        lose_after = self.losses[self.opened]
        self.opened += 1
        for n, chunk in enumerate((b"a", b"b", b"c")):
            if n == lose_after:
                raise ChannelLostError("dropped")
            yield chunk

    async def read(self) -> str:
        lose = self.losses[self.opened] is not None
        self.opened += 1
        if lose:
            raise ChannelLostError("dropped")
        return "content"


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


def test_a_stream_lost_before_its_first_chunk_runs_again() -> None:
    channel = Channel(0, None)
    assert asyncio.run(collect(stream_once_more_if_lost(channel.tarball))) == b"abc"
    assert channel.opened == 2


def test_a_stream_lost_midway_fails_rather_than_repeat_its_start() -> None:
    channel = Channel(2, None)
    sent: list[bytes] = []

    async def go() -> None:
        async for chunk in stream_once_more_if_lost(channel.tarball):
            sent.append(chunk)

    with pytest.raises(ChannelLostError):
        asyncio.run(go())
    assert sent == [b"a", b"b"]  # never a, b, a, b, c
    assert channel.opened == 1


def test_a_stream_lost_twice_fails() -> None:
    with pytest.raises(ChannelLostError):
        asyncio.run(collect(stream_once_more_if_lost(Channel(0, 0).tarball)))


def test_a_read_runs_once_more_and_only_once() -> None:
    channel = Channel(0, None)
    assert asyncio.run(call_once_more_if_lost(channel.read)) == "content"
    with pytest.raises(ChannelLostError):
        asyncio.run(call_once_more_if_lost(Channel(0, 0, None).read))
