"""File ops over the warm channel: uploads in whole frames, listings, the namespace as a tar
stream, and open files read in bounded windows. ``AgentSession`` offers each as a method."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from trove_api.runtimes.channel import fds
from trove_api.runtimes.channel.protocol import (
    CANCEL,
    DATA,
    EOF,
    EXPORT_ACK_BYTES,
    EXPORT_WINDOW,
    FRAME_BYTES,
    READ_AHEAD,
    READ_WINDOW,
    RESULT,
    Request,
    agent_error,
    paced_frames,
    reply,
)
from trove_core.errors import PayloadTooLargeError, TroveError
from trove_core.paths import display
from trove_core.runtime import FileStat

if TYPE_CHECKING:
    from trove_api.runtimes.channel.session import AgentSession


async def write(session: AgentSession, rel: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
    if session.fds is not None:
        # Local: a large body, or one still arriving, goes straight into the agent's temp file.
        # A small one at hand goes framed, in one exchange: handing the file over costs a round
        # trip more and keeps the temp file open across it (a server killed meanwhile leaves it
        # for the namespace's next agent to sweep).
        head, following, remaining = await _head(chunks, fds.HANDED_MIN_BYTES)
        if remaining is not None:
            try:
                return await fds.write_through(session, rel, _chained(head, following, remaining), max_bytes)
            finally:
                if following is not None:  # an upload refused before reading on stops reading
                    following.cancel()
        chunks = _chained(head, None, None)
    request = await session.open({"op": "write", "path": rel, "max_bytes": max_bytes})
    # Request bodies arrive in small pieces; fewer, larger frames go faster through the
    # API server and the kubelet. Each frame is allocated whole and filled in place behind
    # its own header (the body's bytes are copied once, into the frame). A sender task
    # overlaps the websocket's drain with reading the body; the bounded queue keeps at
    # most two frames waiting.
    frames: asyncio.Queue[bytearray | memoryview | None] = asyncio.Queue(maxsize=2)
    failed: list[Exception] = []
    overhead = session.frame_overhead

    async def send_frames() -> None:
        # Consumes to the end even after a failure, so the reader never blocks on a full queue.
        while (frame := await frames.get()) is not None:
            if not failed:
                try:
                    await session.send_built(request.id, DATA, frame)
                except Exception as exc:  # re-raised by the reader below
                    failed.append(exc)

    sender = asyncio.create_task(send_frames())
    size = 0
    frame, filled = session.frame_buffer(FRAME_BYTES), overhead
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                await request.send(CANCEL)
                await request.result()
                raise PayloadTooLargeError(f"{display(rel)} is larger than the limit of {max_bytes} bytes")
            # An early answer (e.g. a rejected path) or a failed send ends the upload at once.
            if not request.queue.empty() or failed:
                break
            rest = memoryview(chunk)
            while rest:
                piece = rest[: len(frame) - filled]
                frame[filled : filled + len(piece)] = piece
                filled += len(piece)
                rest = rest[len(piece) :]
                if filled == len(frame):
                    await frames.put(frame)  # handed over, not copied
                    frame, filled = session.frame_buffer(FRAME_BYTES), overhead
        else:
            if filled > overhead:
                await frames.put(memoryview(frame)[:filled])
            await frames.put(None)
            await sender
            if not failed:
                await request.send(EOF)
        if failed:
            raise failed[0]
        result = await request.result()
    except BaseException:
        await request.abandon()
        raise
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        request.close()
    if not result.get("ok"):
        raise agent_error(result)
    return int(result["size"])


async def _head(
    chunks: AsyncIterator[bytes], size: int
) -> tuple[list[bytes], asyncio.Future[bytes] | None, AsyncIterator[bytes] | None]:
    """The first chunks of ``chunks`` while they come at once, up to ``size`` bytes; the next
    one if it is still on its way (not waited for: that upload opens now); and the iterator for
    the rest (None: the body is all in the head)."""
    head: list[bytes] = []
    taken = 0
    iterator = aiter(chunks)
    while taken < size:
        following = asyncio.ensure_future(anext(iterator))
        await asyncio.wait({following}, timeout=fds.HANDED_WAIT_S)
        if not following.done():
            return head, following, iterator
        try:
            chunk = following.result()
        except StopAsyncIteration:
            return head, None, None
        head.append(chunk)
        taken += len(chunk)
    return head, None, iterator


async def _chained(
    head: list[bytes], following: asyncio.Future[bytes] | None, rest: AsyncIterator[bytes] | None
) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    if following is not None:
        try:
            yield await following
        except StopAsyncIteration:
            return
    if rest is not None:
        async for chunk in rest:
            yield chunk


async def list_dir(
    session: AgentSession, rel: str, *, recursive: bool, max_entries: int, max_depth: int
) -> tuple[list[FileStat], bool]:
    result = await session.call(
        {
            "op": "list",
            "path": rel,
            "recursive": recursive,
            "max_entries": max_entries,
            "max_depth": max_depth,
        }
    )
    entries = [
        FileStat(rel=str(e[0]), is_dir=bool(e[1]), size=int(e[2]), mtime_ns=int(e[3]))
        for e in result["entries"]
    ]
    return entries, bool(result["truncated"])


async def export_tar(session: AgentSession) -> AsyncIterator[bytes]:
    """The namespace as a gzip tar, acknowledged as consumed so the pod never runs ahead."""
    request = await session.open({"op": "export", "window": EXPORT_WINDOW})
    async with contextlib.aclosing(paced_frames(request, EXPORT_ACK_BYTES)) as frames:
        async for kind, payload in frames:
            if kind == DATA:
                yield payload
            else:
                result = reply(payload)
                if not result.get("ok"):
                    raise agent_error(result)
                return


async def open_file(session: AgentSession, rel: str) -> AgentFile | fds.HandedFile:
    if session.fds is not None:
        result, handed = await fds.open_through(session, rel)
        if handed is not None:
            return handed
    else:
        result = await session.call({"op": "open", "path": rel})
    stat = FileStat(rel=rel, is_dir=False, size=int(result["size"]), mtime_ns=int(result["mtime_ns"]))
    return AgentFile(session, int(result["handle"]), stat)


class AgentFile:
    """A file the agent holds open; bytes are pulled in bounded windows, so memory stays flat."""

    def __init__(self, session: AgentSession, handle: int, stat: FileStat) -> None:
        self.session = session
        self.handle = handle
        self.stat = stat

    async def iter_bytes(self, start: int, end: int) -> AsyncIterator[bytes]:
        # Two windows in flight: the pod sends the next one while this one is consumed, and at
        # most two windows wait in memory however slow the HTTP client is.
        windows = [(s, min(end, s + READ_WINDOW)) for s in range(start, end, READ_WINDOW)]
        pending: collections.deque[Request] = collections.deque()
        index = 0
        try:
            while index < len(windows) and len(pending) < READ_AHEAD:
                pending.append(await self._pread(*windows[index]))
                index += 1
            while pending:
                request = pending.popleft()
                async for chunk in self._drain(request):
                    yield chunk
                if index < len(windows):
                    pending.append(await self._pread(*windows[index]))
                    index += 1
        finally:
            for request in pending:
                request.close()

    async def _pread(self, start: int, end: int) -> Request:
        return await self.session.open({"op": "pread", "handle": self.handle, "start": start, "end": end})

    async def _drain(self, request: Request) -> AsyncIterator[bytes]:
        try:
            while True:
                kind, payload = await request.next()
                if kind == DATA:
                    yield payload
                elif kind == RESULT:
                    result = reply(payload)
                    if not result.get("ok"):
                        raise agent_error(result)
                    return
        finally:
            request.close()

    async def aclose(self) -> None:
        if not self.session.closed:
            with contextlib.suppress(TroveError):
                await self.session.call({"op": "close", "handle": self.handle})
