"""The warm channel's protocol, as both halves speak it: frame types, size limits, the agent's
error codes mapped onto the error tree, and ``Request``, one id-tagged exchange.

A frame is a 9-byte ``>IIB`` header (payload length, request id, type) and its payload
(``frames.py`` splits a byte stream into them). ``session.py`` multiplexes requests over one
transport; ``files.py``, ``processes.py``, ``ports.py`` and ``restore.py`` are the ops."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from trove_api.runtimes.channel.session import AgentSession

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
                return self.parsed if self.parsed is not None else reply(payload)

    def close(self) -> None:
        self.session.requests.pop(self.id, None)


def reply(payload: bytes) -> dict[str, Any]:
    """A RESULT frame's JSON object."""
    value = json_object(payload)
    if value is None:
        raise TroveError("The sandbox agent sent a malformed reply")
    return value


def json_object(payload: bytes) -> dict[str, Any] | None:
    """``payload`` as a JSON object, or None if it is not one."""
    try:
        value = json.loads(payload)
    except ValueError:  # not JSON, or not UTF-8
        return None
    return value if isinstance(value, dict) else None


async def paced_frames(
    request: Request, ack_bytes: int, counted: Callable[[bytes], int] = len
) -> AsyncGenerator[tuple[int, bytes], None]:
    """A paced stream's DATA frames, then its RESULT. The agent runs at most a window ahead of
    what is acknowledged: every ``ack_bytes`` consumed (``counted`` per frame) are acknowledged
    once the caller has taken them. A caller leaving before the RESULT abandons the request."""
    consumed = acknowledged = 0
    finished = False
    try:
        while True:
            kind, payload = await request.next()
            if kind == DATA:
                yield kind, payload
                consumed += counted(payload)
                if consumed - acknowledged >= ack_bytes:
                    await request.send(DATA, str(consumed).encode())
                    acknowledged = consumed
            elif kind == RESULT:
                finished = True
                yield kind, payload
                return
    finally:
        if not finished:
            await request.abandon()
        request.close()
