"""The client half of the warm channel: framed, id-tagged requests to trove-agent over any byte pipe.

The agent (``api/trove_api/runtimes/agent/trove_agent.py``) speaks 9-byte ``>IIB`` headers (payload length,
request id, type) in both directions. One ``AgentSession`` multiplexes any number of
concurrent commands and transfers; the transport (a pod exec websocket, or a local pipe in
tests) only moves bytes. If the transport drops, every open request fails with
``ChannelLostError`` and the owner reconnects.

What the agent sends is checked, not trusted: a frame is capped by type before it is buffered,
what waits per request is capped, exec output is cut at the call's own limit, and an exec
has the API's own deadline. A stream that breaks the protocol (oversized or unknown frame,
a RESULT that is not a JSON object, too much waiting for one request) drops the channel:
every open request fails with ``ChannelLostError``, the transport is closed, and the next
call reconnects. Frames for an id that is not open are counted and dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from trove_api.runtimes.channel.frames import HEADER, FrameError, FrameReader
from trove_core.errors import (
    ChannelLostError,
    InvalidRequestError,
    IsADirectoryError_,
    NotADirectoryError_,
    PathNotFoundError,
    PathRejectedError,
    PayloadTooLargeError,
    ProcessLimitReachedError,
    ProcessNotAPtyError,
    ProcessNotFoundError,
    ProcessStartFailedError,
    ProcessStdinClosedError,
    RootDeleteRefusedError,
    SandboxPortClosedError,
    SnapshotCorruptError,
    StorageFullError,
    TroveError,
)
from trove_core.paths import display
from trove_core.runtime import ExecOutput, ExecSpec, FileStat, SandboxUsage

OPEN, DATA, EOF, CANCEL, STDOUT, STDERR, RESULT, HELLO = 1, 2, 3, 4, 5, 6, 7, 8
ACK = 9  # port_connect only (channel/ports.py)
FRAME_BYTES = 1024 * 1024
READ_WINDOW = 2 * 1024 * 1024
READ_AHEAD = 2
EXPORT_WINDOW = 8 * 1024 * 1024
EXPORT_ACK_BYTES = 1024 * 1024
_LOST = -1
# The agent sends data in 256 KiB frames and output in 64 KiB ones; RESULTs are small except
# a listing (recovery lists a whole restored tree in one).
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_RESULT_BYTES = 64 * 1024 * 1024
FRAME_LIMITS = {
    DATA: MAX_FRAME_BYTES,
    STDOUT: MAX_FRAME_BYTES,
    STDERR: MAX_FRAME_BYTES,
    RESULT: MAX_RESULT_BYTES,
    HELLO: 64 * 1024,
    EOF: 0,  # port_connect: the in-sandbox server closed its side
    ACK: 32,
}
# What may wait unread for one request: an export runs at most EXPORT_WINDOW ahead of its
# acknowledgements, a read READ_WINDOW per request; exec output is consumed as it comes.
REQUEST_BUFFER_BYTES = 4 * EXPORT_WINDOW
# The agent kills a call at its timeout and answers within seconds (its drain grace); past
# this the API asks once more (CANCEL), then gives the channel up.
EXEC_GRACE_S = 5.0
CANCEL_GRACE_S = 5.0

log = logging.getLogger(__name__)

Sender = Callable[[bytes | bytearray | memoryview], Awaitable[None]]


_ERRORS: dict[str, tuple[type[TroveError], str]] = {
    "path_not_found": (PathNotFoundError, "Path not found: {}"),
    "not_a_directory": (NotADirectoryError_, "Not a directory: {}"),
    "is_a_directory": (IsADirectoryError_, "Is a directory: {}"),
    "path_rejected": (PathRejectedError, "Path rejected: {} {}"),
    "storage_full": (StorageFullError, "No space left while writing {}"),
    "payload_too_large": (PayloadTooLargeError, "{} is larger than the limit"),
    "root_delete_refused": (RootDeleteRefusedError, "Refusing to delete the namespace root ({})"),
    "snapshot_corrupt": (SnapshotCorruptError, "Snapshot refused: {1}"),
    "process_not_found": (ProcessNotFoundError, "{1}"),
    "process_limit_reached": (ProcessLimitReachedError, "Process limit reached: {1}"),
    "process_stdin_closed": (ProcessStdinClosedError, "{1}"),
    "process_start_failed": (ProcessStartFailedError, "Cannot start {1}"),
    "process_not_a_pty": (ProcessNotAPtyError, "{1}"),
    "invalid_request": (InvalidRequestError, "{1}"),
    "port_closed": (SandboxPortClosedError, "{1}"),
    "port_reset": (SandboxPortClosedError, "{1}"),
}


def agent_error(result: dict[str, Any]) -> TroveError:
    code = str(result.get("code", "internal"))
    rel = str(result.get("rel", ""))
    message = str(result.get("message", ""))
    if code in _ERRORS:
        cls, template = _ERRORS[code]
        return cls(template.format(display(rel), message).strip())
    return TroveError(f"Sandbox error ({code}) on {display(rel)}: {message}")


class Request:
    def __init__(self, session: AgentSession, rid: int) -> None:
        self.session = session
        self.id = rid
        self.queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.buffered = 0  # payload bytes waiting in the queue
        self.parsed: dict[str, Any] | None = None  # the RESULT, checked (and parsed) on arrival

    async def send(self, kind: int, payload: bytes | bytearray | memoryview = b"") -> None:
        await self.session.send_frame(self.id, kind, payload)

    async def send_data(self, data: bytes | bytearray) -> None:
        if len(data) <= FRAME_BYTES:
            await self.send(DATA, data)
            return
        view = memoryview(data)
        for start in range(0, len(view), FRAME_BYTES):
            await self.send(DATA, view[start : start + FRAME_BYTES])

    async def abandon(self) -> None:
        """Ask the agent to stop this request, if the channel still stands (best effort: a
        caller giving up must not fail on the way out)."""
        if not self.session.closed and self.id in self.session.requests:
            with contextlib.suppress(TroveError, OSError):
                await self.send(CANCEL)

    async def next(self) -> tuple[int, bytes]:
        kind, payload = await self.queue.get()
        if kind == _LOST:
            raise ChannelLostError("The connection to the sandbox pod dropped; retry the call")
        self.buffered -= len(payload)
        return kind, payload

    async def result(self) -> dict[str, Any]:
        """Skip to the RESULT frame (discarding anything else)."""
        while True:
            kind, payload = await self.next()
            if kind == RESULT:
                return self.parsed if self.parsed is not None else _json(payload)

    def close(self) -> None:
        self.session.requests.pop(self.id, None)


def reply(payload: bytes) -> dict[str, Any]:
    """A RESULT frame's JSON object."""
    return _json(payload)


def _json(payload: bytes) -> dict[str, Any]:
    value = _object(payload)
    if value is None:
        raise TroveError("The sandbox agent sent a malformed reply")
    return value


def _object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:  # not JSON, or not UTF-8
        return None
    return value if isinstance(value, dict) else None


class AgentSession:
    """Frame parser + request table over one transport."""

    def __init__(
        self, sender: Sender, prefix: bytes = b"", abort: Callable[[], object] | None = None
    ) -> None:
        self._sender = sender
        # Bytes the transport wants before each frame (the exec websocket's stdin channel),
        # joined in with the header: one copy of each payload, not two.
        self._prefix = prefix
        # Closes the transport when the stream breaks the protocol (its owner then reconnects).
        self._abort = abort
        self._frames = FrameReader(FRAME_LIMITS)
        self.stray_frames = 0  # frames for an id not open (late output of a closed request)
        self._next_id = 1
        self.requests: dict[int, Request] = {}
        self.hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.last_used = time.monotonic()
        # Pids of processes started over this session and not seen to end (channel/processes.py).
        self.live_processes: set[int] = set()

    # -- transport side -------------------------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        if self.closed:
            return
        try:
            frames = self._frames.feed(data)
        except FrameError as exc:
            self.broken(str(exc))
            return
        for rid, kind, payload in frames:
            if kind == HELLO:
                hello = _object(payload)
                if rid != 0 or hello is None:
                    self.broken("a malformed HELLO")
                    return
                if not self.hello.done():
                    self.hello.set_result(hello)
                continue
            request = self.requests.get(rid)
            if request is None:
                self.stray_frames += 1
                continue
            if kind == RESULT:
                request.parsed = _object(payload)
                if request.parsed is None:
                    self.broken(f"a RESULT for id {rid} that is not a JSON object")
                    return
                self.requests.pop(rid, None)
            request.buffered += len(payload)
            if request.buffered > REQUEST_BUFFER_BYTES:
                self.broken(f"more than {REQUEST_BUFFER_BYTES} bytes waiting for id {rid}")
                return
            request.queue.put_nowait((kind, payload))

    def broken(self, reason: str) -> None:
        """The stream cannot be trusted any more: fail every request, close the transport."""
        if self.closed:
            return
        log.warning("dropping the sandbox channel: %s", reason)
        for request in self.requests.values():  # what waits unread is let go at once
            while not request.queue.empty():
                request.queue.get_nowait()
            request.buffered = 0
        self.connection_lost()
        if self._abort is not None:
            self._abort()

    def connection_lost(self) -> None:
        self.closed = True
        if not self.hello.done():
            self.hello.set_exception(ChannelLostError("The sandbox agent did not start"))
        for request in list(self.requests.values()):
            request.queue.put_nowait((_LOST, b""))
        self.requests.clear()

    async def send_frame(self, rid: int, kind: int, payload: bytes | bytearray | memoryview = b"") -> None:
        if self.closed:
            raise ChannelLostError("The connection to the sandbox pod is closed; retry the call")
        await self._sender(b"".join((self._prefix, HEADER.pack(len(payload), rid, kind), payload)))

    @property
    def frame_overhead(self) -> int:
        return len(self._prefix) + HEADER.size

    def frame_buffer(self, payload_bytes: int) -> bytearray:
        """The prefix, room for a header, then ``payload_bytes`` to fill in; sent by ``send_built``."""
        # Allocated once at its full size (a zeroed bytes joined on would be a second one, copied).
        frame = bytearray(len(self._prefix) + HEADER.size + payload_bytes)
        frame[: len(self._prefix)] = self._prefix
        return frame

    async def send_built(self, rid: int, kind: int, frame: bytearray | memoryview) -> None:
        """Send a ``frame_buffer()`` (or its start) once filled: no copy into a joined frame."""
        if self.closed:
            raise ChannelLostError("The connection to the sandbox pod is closed; retry the call")
        HEADER.pack_into(frame, len(self._prefix), len(frame) - self.frame_overhead, rid, kind)
        await self._sender(frame)

    # -- requests -------------------------------------------------------------------------

    async def open(self, op: dict[str, Any]) -> Request:
        if self.closed:
            raise ChannelLostError("The connection to the sandbox pod is closed; retry the call")
        self.last_used = time.monotonic()
        rid = self._next_id
        self._next_id = (self._next_id % 0xFFFFFFFE) + 1
        request = Request(self, rid)
        self.requests[rid] = request
        await request.send(OPEN, json.dumps(op).encode())
        return request

    async def call(self, op: dict[str, Any]) -> dict[str, Any]:
        request = await self.open(op)
        try:
            result = await request.result()
        finally:
            request.close()
        if not result.get("ok"):
            raise agent_error(result)
        return result

    async def exec(self, spec: ExecSpec, file_bytes: int, *, cpu_s: int | None = None) -> ExecOutput:
        request = await self.open(
            {
                "op": "exec",
                "script": spec.script,
                "timeout": spec.timeout_s,
                "limit": spec.output_limit,
                "stdin": spec.stdin is not None,
                "file_bytes": file_bytes,
                "cpu_s": cpu_s,  # per command (the local sandbox); None: no limit
            }
        )
        out, err = bytearray(), bytearray()
        cut = {STDOUT: False, STDERR: False}

        async def collect() -> dict[str, Any]:
            while True:
                kind, payload = await request.next()
                if kind in (STDOUT, STDERR):
                    # Kept to the call's own limit, whatever the agent sends.
                    buffer = out if kind == STDOUT else err
                    room = spec.output_limit - len(buffer)
                    if room > 0:
                        buffer += payload[:room]
                    cut[kind] = cut[kind] or len(payload) > room
                elif kind == RESULT:
                    return request.parsed if request.parsed is not None else _json(payload)

        try:
            try:
                async with asyncio.timeout(spec.timeout_s + EXEC_GRACE_S):
                    if spec.stdin is not None:
                        await request.send_data(spec.stdin)
                        await request.send(EOF)
                    result = await collect()
            except TimeoutError:
                # The agent missed its own deadline: ask once more, then give the channel up.
                await request.send(CANCEL)
                try:
                    async with asyncio.timeout(CANCEL_GRACE_S):
                        result = await collect()
                except TimeoutError:
                    waited = spec.timeout_s + EXEC_GRACE_S + CANCEL_GRACE_S
                    self.broken(f"exec id {request.id} unanswered after {waited:g} s")
                    raise ChannelLostError("The sandbox agent stopped answering; retry the call") from None
        except asyncio.CancelledError:
            await request.abandon()
            raise
        finally:
            request.close()
        if not result.get("ok"):
            raise agent_error(result)
        return ExecOutput(
            exit_code=int(result["exit_code"]),
            stdout=bytes(out),
            stderr=bytes(err),
            stdout_truncated=bool(result["stdout_truncated"]) or cut[STDOUT],
            stderr_truncated=bool(result["stderr_truncated"]) or cut[STDERR],
            timed_out=bool(result["timed_out"]),
            duration_ms=int(result["duration_ms"]),
        )

    async def write(self, rel: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        request = await self.open({"op": "write", "path": rel, "max_bytes": max_bytes})
        # Request bodies arrive in small pieces; fewer, larger frames go faster through the
        # API server and the kubelet. Each frame is allocated whole and filled in place behind
        # its own header (the body's bytes are copied once, into the frame). A sender task
        # overlaps the websocket's drain with reading the body; the bounded queue keeps at
        # most two frames waiting.
        frames: asyncio.Queue[bytearray | memoryview | None] = asyncio.Queue(maxsize=2)
        failed: list[Exception] = []
        overhead = self.frame_overhead

        async def send_frames() -> None:
            # Consumes to the end even after a failure, so the reader never blocks on a full queue.
            while (frame := await frames.get()) is not None:
                if not failed:
                    try:
                        await self.send_built(request.id, DATA, frame)
                    except Exception as exc:  # re-raised by the reader below
                        failed.append(exc)

        sender = asyncio.create_task(send_frames())
        size = 0
        frame, filled = self.frame_buffer(FRAME_BYTES), overhead
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    await request.send(CANCEL)
                    await request.result()
                    raise PayloadTooLargeError(
                        f"{display(rel)} is larger than the limit of {max_bytes} bytes"
                    )
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
                        frame, filled = self.frame_buffer(FRAME_BYTES), overhead
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

    async def list(
        self, rel: str, *, recursive: bool, max_entries: int, max_depth: int
    ) -> tuple[list[FileStat], bool]:
        result = await self.call(
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

    async def delete(self, rel: str) -> None:
        await self.call({"op": "delete", "path": rel})

    async def usage(self, *, cgroup: bool) -> SandboxUsage:
        """The sandbox's CPU and memory; ``cgroup``: from the agent's own cgroup where visible."""
        got = await self.call({"op": "usage", "cgroup": cgroup})
        return SandboxUsage(
            cpu_count=int(got.get("cpu_count") or 0),
            cpu_ns=int(got.get("cpu_ns") or 0),
            mem_used=int(got.get("mem_used") or 0),
            mem_total=int(got.get("mem_total") or 0),
            mem_cache=int(got.get("mem_cache") or 0),
        )

    async def export_tar(self) -> AsyncIterator[bytes]:
        """The namespace as a gzip tar, acknowledged as consumed so the pod never runs ahead."""
        request = await self.open({"op": "export", "window": EXPORT_WINDOW})
        consumed = acknowledged = 0
        finished = False
        try:
            while True:
                kind, payload = await request.next()
                if kind == DATA:
                    yield payload
                    consumed += len(payload)
                    if consumed - acknowledged >= EXPORT_ACK_BYTES:
                        await request.send(DATA, str(consumed).encode())
                        acknowledged = consumed
                elif kind == RESULT:
                    finished = True
                    result = _json(payload)
                    if not result.get("ok"):
                        raise agent_error(result)
                    return
        finally:
            if not finished:
                await request.abandon()
            request.close()

    async def open_file(self, rel: str) -> AgentFile:
        result = await self.call({"op": "open", "path": rel})
        stat = FileStat(rel=rel, is_dir=False, size=int(result["size"]), mtime_ns=int(result["mtime_ns"]))
        return AgentFile(self, int(result["handle"]), stat)


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
                    result = _json(payload)
                    if not result.get("ok"):
                        raise agent_error(result)
                    return
        finally:
            request.close()

    async def aclose(self) -> None:
        if not self.session.closed:
            with contextlib.suppress(TroveError):
                await self.session.call({"op": "close", "handle": self.handle})
