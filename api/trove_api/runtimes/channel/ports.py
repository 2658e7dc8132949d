"""A TCP connection to a port inside the sandbox (E2B's ``get_host``): the client half of ``port_connect``.

The agent connects to ``127.0.0.1:<port>`` where the sandbox's commands run (its network
namespace, or the pod) and relays the bytes over the namespace's channel, so the port is never
published anywhere else and both runtimes share this one path. Paced both ways: each side has
at most a window of bytes the other has not acknowledged (ACK frames), so a slow reader on
either end holds the other to a window and nothing grows without bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

from trove_api.runtimes.channel.protocol import (
    ACK,
    DATA,
    EOF,
    FRAME_BYTES,
    RESULT,
    Request,
    agent_error,
    reply,
)
from trove_api.runtimes.channel.session import AgentSession
from trove_core.errors import SandboxPortClosedError, TroveError
from trove_core.runtime import NamespaceRef

WINDOW = 256 * 1024
ACK_BYTES = 64 * 1024


class PortStream:
    """One connection's byte stream. ``receive`` answers ``b""`` once the server closed its side."""

    def __init__(self, request: Request, port: int, window: int = WINDOW) -> None:
        self._request = request
        self.port = port
        self._window = window
        self._inbox: collections.deque[bytes] = collections.deque()  # at most a window: the agent waits
        self._eof = False
        self._finished = False
        self._error: TroveError | None = None
        self._sent = self._acked = 0  # our bytes, and how many of them the agent has written
        self._taken = self._reported = 0  # its bytes we consumed, and acknowledged
        self._wake = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"trove-port-{port}")

    async def _read(self) -> None:
        # The one reader of the request: DATA and ACK share it, so send and receive never race.
        try:
            while True:
                kind, payload = await self._request.next()
                if kind == DATA:
                    self._inbox.append(payload)
                elif kind == ACK:
                    self._acked = max(self._acked, int(payload))
                elif kind == EOF:
                    self._eof = True
                elif kind == RESULT:
                    result = reply(payload)
                    if not result.get("ok"):
                        self._error = agent_error(result)
                    return
                self._wake.set()
        except (TroveError, ValueError) as exc:
            self._error = exc if isinstance(exc, TroveError) else TroveError("A malformed port frame")
        finally:
            self._finished = True
            self._wake.set()

    def _closed(self) -> TroveError:
        return self._error or SandboxPortClosedError(f"The connection to port {self.port} is closed")

    async def receive(self) -> bytes:
        while not self._inbox:
            if self._eof:  # every byte of the server's arrived, whatever followed
                return b""
            if self._finished:
                if self._error is not None:
                    raise self._error
                return b""
            self._wake.clear()
            await self._wake.wait()
        data = self._inbox.popleft()
        self._taken += len(data)
        if self._taken - self._reported >= ACK_BYTES and not self._finished:
            self._reported = self._taken
            await self._request.send(ACK, str(self._taken).encode())
        return data

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            while self._sent - self._acked >= self._window:
                if self._finished:
                    raise self._closed()
                self._wake.clear()
                await self._wake.wait()
            if self._finished:
                raise self._closed()
            piece = view[: min(FRAME_BYTES, self._window - (self._sent - self._acked))]
            await self._request.send(DATA, piece)
            self._sent += len(piece)
            view = view[len(piece) :]

    async def send_eof(self) -> None:
        """No more bytes to the server (a half close): its reads see the end."""
        if not self._finished:
            await self._request.send(EOF)

    async def aclose(self) -> None:
        if not self._finished:
            await self._request.abandon()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._request.close()


async def open_port(session: AgentSession, port: int, window: int = WINDOW) -> PortStream:
    """Connected, or ``SandboxPortClosedError`` when nothing in the sandbox accepts on ``port``."""
    request = await session.open({"op": "port_connect", "port": port, "window": window})
    try:
        kind, payload = await request.next()  # ACK: connected; RESULT: refused
    except BaseException:
        request.close()
        raise
    if kind != ACK:
        request.close()
        result = reply(payload) if kind == RESULT else {}
        if result.get("code") == "bad_request":  # "unknown op": an agent from before port_connect
            raise SandboxPortClosedError(
                "This sandbox's trove-agent cannot reach ports (it is older than get_host support): "
                "rebuild or update the sandbox image"
            )
        raise agent_error(result) if result and not result.get("ok") else TroveError("A malformed port reply")
    return PortStream(request, port, window)


class AgentPorts:
    """The Runtime's ``connect_port`` for a backend whose sandboxes run trove-agent (both do)."""

    async def _session(self, ns: NamespaceRef) -> AgentSession:
        raise NotImplementedError

    async def connect_port(self, ns: NamespaceRef, port: int) -> PortStream:
        return await open_port(await self._session(ns), port)
