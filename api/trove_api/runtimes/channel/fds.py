"""Open files handed over by a local agent (SCM_RIGHTS on a unix socket beside its pipes).

Local transport only: the agent still resolves the path and opens the file inside the sandbox
(the path rules stay where only the namespace is visible) and still commits an upload (fsync,
rename); the API only moves the bytes through the descriptor, which saves the copy through the
channel's pipe and the agent's read and write loop (most of an upload's CPU).

The agent is not trusted with what it sends: a descriptor is taken only for a request that
asked for one, only after the agent said (on the channel) that it was sent, without ever
waiting on the socket, and only if it is a regular file on the namespace's own filesystem
(never a FIFO, socket or device that could block the API, nor /proc or another mount); an
upload's must be empty and open for writing. Anything else received is closed at once, and a
refused one drops the channel. A descriptor carries the access the agent had when it opened
the file, as the sandbox's uid: through it the API reads or writes nothing the agent could not
itself, and the API's own caps (upload and read sizes, the disk reserve) still apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from trove_api.runtimes.channel.protocol import CANCEL, DATA, EOF, RESULT, Request, agent_error, reply
from trove_core.errors import ChannelLostError, PayloadTooLargeError, StorageFullError, TroveError
from trove_core.paths import display
from trove_core.runtime import FileStat

if TYPE_CHECKING:
    from trove_api.runtimes.channel.session import AgentSession

RID = struct.Struct(">I")
# Per message: one descriptor is expected; room for a few more so extras are received and closed.
_MOST_FDS = 4
# Messages taken per look at the socket: a flooding agent cannot keep the API in one loop.
_MOST_MESSAGES = 64


class RefusedDescriptor(Exception):
    """What the agent sent is not a descriptor the API may use (the channel is then dropped)."""


class FdChannel:
    """The API's end of the socket; ``device``: st_dev of the namespace's directory."""

    def __init__(self, sock: socket.socket, device: int) -> None:
        sock.setblocking(False)  # only what is already queued is taken: a silent agent never blocks us
        self._sock = sock
        self._device = device
        self._expected: set[int] = set()  # request ids that asked for a descriptor
        self._waiting: dict[int, int] = {}  # request id -> received descriptor, not yet taken

    def expect(self, rid: int) -> None:
        """``rid`` asks the agent for a descriptor: one that arrives for it is kept until taken."""
        self._expected.add(rid)

    def forget(self, rid: int) -> None:
        """``rid`` is over: a descriptor that came for it and was not taken is closed."""
        self._expected.discard(rid)
        fd = self._waiting.pop(rid, None)
        if fd is not None:
            os.close(fd)

    def take(self, rid: int, *, writable: bool) -> int:
        """The descriptor the agent sent for ``rid``, checked; the caller owns (closes) it."""
        self._drain()
        fd = self._waiting.pop(rid, None)
        self._expected.discard(rid)
        if fd is None:
            raise RefusedDescriptor(f"no descriptor arrived for id {rid}")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RefusedDescriptor(f"the descriptor for id {rid} is not a regular file")
            if st.st_dev != self._device:
                raise RefusedDescriptor(f"the descriptor for id {rid} is not on the namespace's filesystem")
            mode = os.O_WRONLY if writable else os.O_RDONLY
            access = _access_mode(fd)
            if access not in (mode, os.O_RDWR) or (writable and st.st_size != 0):
                raise RefusedDescriptor(f"the descriptor for id {rid} is not a fresh file open as asked")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _drain(self) -> None:
        """Take every queued message; keep one descriptor per expected id, close everything else."""
        for _ in range(_MOST_MESSAGES):
            try:
                data, fds, _flags, _address = socket.recv_fds(self._sock, RID.size, _MOST_FDS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the agent's end is gone; its requests fail on the channel
            if not data and not fds:
                return  # end of stream
            rid = RID.unpack(data)[0] if len(data) == RID.size else None
            keep = fds[0] if fds and rid in self._expected and rid not in self._waiting else None
            for fd in fds:
                if fd != keep:
                    os.close(fd)
            if rid is not None and keep is not None:
                self._waiting[rid] = keep

    def close(self) -> None:
        for fd in self._waiting.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._waiting.clear()
        self._expected.clear()
        self._sock.close()


def _access_mode(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE


def new_pair() -> tuple[socket.socket, socket.socket]:
    """(the API's end, the agent's end): a datagram-like pair, one message per descriptor."""
    api_end, agent_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return api_end, agent_end


# -- transfers through a handed-over descriptor ----------------------------------------------

# Bytes per write() or read() of the file: few thread hand-overs, little held in memory.
IO_BYTES = 1024 * 1024
# Smaller uploads go framed (``files.write``): one exchange, no file held open across a round trip.
HANDED_MIN_BYTES = 1024 * 1024
# ... unless the body is still arriving after this long: then it is handed over at once.
HANDED_WAIT_S = 0.05
# How often the agent is told how far the upload is, so it starts writeback (its fsync is short).
PROGRESS_BYTES = 8 * 1024 * 1024


async def write_through(session: AgentSession, rel: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
    """An upload written by the API into the agent's temp file; the agent commits it (fsync, rename)."""
    fds = session.fds
    assert fds is not None
    request = await session.open({"op": "write", "path": rel, "max_bytes": max_bytes, "fd": True})
    fds.expect(request.id)
    fd = -1
    size = 0
    try:
        kind, payload = await request.next()  # DATA once the agent has sent it; a refusal is the RESULT
        if kind == RESULT:
            raise _refusal(request, payload)
        fd = _taken(session, request, writable=True)
        try:
            filled = await _fill(fd, chunks, request, rel, max_bytes)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # The namespace's quota, as the agent says it on the framed path (not the server's disk).
            raise StorageFullError(f"No space left while writing {display(rel)}") from None
        os.close(fd)  # every write has returned: the agent's fsync covers them
        fd = -1
        if filled is not None:
            size = filled
            await request.send(EOF, str(size).encode())
        result = await request.result()
        if filled is None and result.get("ok"):  # the agent answered before the end: never a commit
            raise TroveError("The sandbox agent sent a malformed reply")
    except BaseException:
        await request.abandon()
        raise
    finally:
        if fd >= 0:
            os.close(fd)
        fds.forget(request.id)
        request.close()
    if not result.get("ok"):
        raise agent_error(result)
    if int(result["size"]) != size:
        raise TroveError("The sandbox agent sent a malformed reply")
    return size


async def _fill(
    fd: int, chunks: AsyncIterator[bytes], request: Request, rel: str, max_bytes: int
) -> int | None:
    """The body written at its offsets in batches, one in a worker thread while the next is read;
    its size, or None if the agent answered (or the channel dropped) before its end."""
    batch: list[bytes] = []
    batched = written = told = 0
    writing: asyncio.Future[None] | None = None
    try:
        async for chunk in chunks:
            if written + batched + len(chunk) > max_bytes:
                await request.send(CANCEL)
                await request.result()
                raise PayloadTooLargeError(f"{display(rel)} is larger than the limit of {max_bytes} bytes")
            if not request.queue.empty():  # an early answer, or the channel dropped
                return None
            batch.append(chunk)
            batched += len(chunk)
            if batched >= IO_BYTES:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(_write_all, fd, batch, written))
                batch, batched, written = [], 0, written + batched
                if written - told >= PROGRESS_BYTES:
                    await request.send(DATA, str(told := written).encode())
        else:
            if writing is not None:
                await writing
            writing = None
            _write_all(fd, batch, written)
            written += batched
    finally:
        if writing is not None:  # never close the descriptor under a write in flight
            with contextlib.suppress(Exception):
                await asyncio.shield(writing)
    return written


def _write_all(fd: int, chunks: list[bytes], offset: int) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            n = os.pwrite(fd, view, offset)
            offset += n
            view = view[n:]


async def open_through(session: AgentSession, rel: str) -> tuple[dict[str, Any], HandedFile | None]:
    """``rel`` opened by the agent: its RESULT, and the file if it was handed over (else the
    agent holds it open under the RESULT's ``handle``)."""
    fds = session.fds
    assert fds is not None
    request = await session.open({"op": "open", "path": rel, "fd": True})
    fds.expect(request.id)
    try:
        result = await request.result()
        if not result.get("ok"):
            raise agent_error(result)
        if not result.get("fd"):
            return result, None
        fd = _taken(session, request, writable=False)
    finally:
        fds.forget(request.id)
        request.close()
    st = os.fstat(fd)  # the API's own view of the size, not the agent's word
    return result, HandedFile(fd, FileStat(rel=rel, is_dir=False, size=st.st_size, mtime_ns=st.st_mtime_ns))


class HandedFile:
    """A file read straight through its descriptor, in worker threads, one read ahead."""

    def __init__(self, fd: int, stat: FileStat) -> None:
        self.fd = fd
        self.stat = stat
        self._reading: asyncio.Future[bytes] | None = None

    async def iter_bytes(self, start: int, end: int) -> AsyncIterator[bytes]:
        # The next read runs while the caller sends this chunk on.
        position = start
        if position < end:
            self._reading = self._read(position, end)
        while self._reading is not None:
            data = await self._reading
            position += len(data)
            self._reading = self._read(position, end) if data and position < end else None
            if data:
                yield data

    def _read(self, position: int, end: int) -> asyncio.Future[bytes]:
        return asyncio.ensure_future(
            asyncio.to_thread(os.pread, self.fd, min(IO_BYTES, end - position), position)
        )

    async def aclose(self) -> None:
        if self.fd < 0:
            return
        fd, self.fd, reading = self.fd, -1, self._reading
        if reading is None or reading.done():
            if reading is not None and not reading.cancelled():
                reading.exception()  # retrieved: the read's error no longer matters
            os.close(fd)
            return
        # Never closed under a read in flight: the read's end closes it. Waited for here, but a
        # caller cancelled meanwhile is cancelled (the close still comes when the read ends).
        reading.add_done_callback(lambda _: os.close(fd))
        with contextlib.suppress(Exception):
            await asyncio.shield(reading)


def _taken(session: AgentSession, request: Request, *, writable: bool) -> int:
    fds = session.fds
    assert fds is not None
    try:
        return fds.take(request.id, writable=writable)
    except RefusedDescriptor as exc:
        session.broken(str(exc))
        raise ChannelLostError("The sandbox agent broke the protocol; retry the call") from None


def _refusal(request: Request, payload: bytes) -> TroveError:
    result = request.parsed if request.parsed is not None else reply(payload)
    if result.get("ok"):
        return TroveError("The sandbox agent sent a malformed reply")
    return agent_error(result)
