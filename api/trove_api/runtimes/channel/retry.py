"""Idempotent calls retried once when the channel to the sandbox drops.

A warm channel can die between calls (the agent restarted, the pod's exec stream closed): the
first call to notice gets ``ChannelLostError`` and the runtime opens a fresh channel on the next
call. A read that changes nothing can simply run again there. A stream can only if none of it
has been handed on: a retry after that would repeat its first bytes (for a snapshot, a
corrupt tarball), so a stream lost midway fails instead."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from trove_core.errors import ChannelLostError

T = TypeVar("T")


async def call_once_more_if_lost(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except ChannelLostError:
        return await call()


async def stream_once_more_if_lost(stream: Callable[[], AsyncIterator[bytes]]) -> AsyncIterator[bytes]:
    sent = False
    try:
        async for chunk in stream():
            sent = True
            yield chunk
    except ChannelLostError:
        if sent:
            raise
    else:
        return
    async for chunk in stream():
        yield chunk
