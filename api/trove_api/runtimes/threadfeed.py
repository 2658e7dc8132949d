"""A byte stream handed from the event loop to a worker thread that reads it as a file.

Snapshot restores run ``tarfile`` in stream mode in a thread (extracting on the local runtime,
checking members on Kubernetes) while the event loop receives the chunks. The loop waits for
room before each chunk (at most ``depth`` wait), so a tarball never sits whole in memory; the
thread gives the room back as it takes chunks. Either side may stop early: ``abort`` ends the
thread's reads with ``Aborted``, and ``worker_stopped`` frees a feeder waiting for room.
"""

from __future__ import annotations

import asyncio
import queue


class Aborted(Exception):
    """The feeding side failed or gave up; the reading thread stops."""


class ThreadFedReader:
    """A read-only, file-like object for a worker thread, fed by the event loop."""

    def __init__(self, depth: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: queue.SimpleQueue[bytes | Aborted | None] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(depth)
        self._pending = b""
        self._eof = False

    # -- the event loop's side ---------------------------------------------------------------

    async def put(self, chunk: bytes) -> None:
        await self._room.acquire()
        self._items.put(chunk)

    def end(self) -> None:
        self._items.put(None)

    def abort(self, cause: BaseException | None = None) -> None:
        aborted = Aborted(str(cause) if cause else "the stream was abandoned")
        aborted.__cause__ = cause
        self._items.put(aborted)

    def worker_stopped(self) -> None:
        """The thread will read no more: wake a ``put`` waiting for room (the caller then stops)."""
        self._room.release()

    # -- the worker thread's side ------------------------------------------------------------

    def read(self, n: int = -1) -> bytes:
        while not self._pending and not self._eof:
            item = self._items.get()
            self._loop.call_soon_threadsafe(self._room.release)
            if isinstance(item, Aborted):
                raise item
            if item is None:
                self._eof = True
            else:
                self._pending = item
        if n < 0 or n >= len(self._pending):
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:n], self._pending[n:]
        return data
