"""The client half of the warm channel: framed, id-tagged requests to trove-agent over any byte pipe.

The agent (``api/trove_api/runtimes/agent/trove_agent.py``) speaks 9-byte ``>IIB`` headers (payload length,
request id, type) in both directions (``protocol.py``; the file ops are in ``files.py``). One
``AgentSession`` multiplexes any number of concurrent commands and transfers; the transport
(a pod exec websocket, or a local pipe) only moves bytes. If the transport drops, every open
request fails with ``ChannelLostError`` and the owner reconnects.

What the agent sends is checked, not trusted: a frame is capped by type before it is buffered,
what waits per request is capped, exec output is cut at the call's own limit, and an exec
has the API's own deadline. A stream that breaks the protocol (oversized or unknown frame,
a RESULT that is not a JSON object, too much waiting for one request) drops the channel:
every open request fails with ``ChannelLostError``, the transport is closed, and the next
call reconnects. Frames for an id that is not open are counted and dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from trove_api.runtimes.channel import files
from trove_api.runtimes.channel.fds import FdChannel, HandedFile
from trove_api.runtimes.channel.frames import HEADER, FrameError, FrameReader
from trove_api.runtimes.channel.protocol import (
    _LOST,
    CANCEL,
    EOF,
    FRAME_LIMITS,
    HELLO,
    OPEN,
    REQUEST_BUFFER_BYTES,
    RESULT,
    STDERR,
    STDOUT,
    Request,
    Sender,
    agent_error,
    json_object,
    reply,
)
from trove_core.errors import ChannelLostError
from trove_core.runtime import ExecOutput, ExecSpec, FileStat, SandboxUsage

# The agent kills a call at its timeout and answers within seconds (its drain grace); past
# this the API asks once more (CANCEL), then gives the channel up.
EXEC_GRACE_S = 5.0
CANCEL_GRACE_S = 5.0

log = logging.getLogger(__name__)


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
        # Local transport: open files the agent hands over (channel/fds.py); None on Kubernetes.
        self.fds: FdChannel | None = None

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
                hello = json_object(payload)
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
                request.parsed = json_object(payload)
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
                    return request.parsed if request.parsed is not None else reply(payload)

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
        return await files.write(self, rel, chunks, max_bytes)

    async def list(
        self, rel: str, *, recursive: bool, max_entries: int, max_depth: int
    ) -> tuple[list[FileStat], bool]:
        return await files.list_dir(
            self, rel, recursive=recursive, max_entries=max_entries, max_depth=max_depth
        )

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

    def export_tar(self) -> AsyncIterator[bytes]:
        """The namespace as a gzip tar, acknowledged as consumed so the pod never runs ahead."""
        return files.export_tar(self)

    async def open_file(self, rel: str) -> files.AgentFile | HandedFile:
        return await files.open_file(self, rel)
