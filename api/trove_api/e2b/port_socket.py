"""A WebSocket to a sandbox's port (E2B's ``get_host``): the client's socket relayed message by message.

ASGI hands over messages, not the upgraded connection's bytes, so Trove is a WebSocket client
of the sandbox server (``websockets``' sans-I/O protocol over ``connect_port``) and relays
what each side sends: text and binary messages, and the close with its code. The server's
handshake decides: its subprotocol is the one accepted, a refusal is the client's refusal.
Pings are answered by each side's own protocol. Messages are capped (``MAX_MESSAGE_BYTES``,
a larger one closes with 1009), so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from trove_core.runtime import PortConnection

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
ABNORMAL = 1011  # the server went away without a close: "unexpected condition"
HANDSHAKE_S = 30.0


async def _flush(proto: ClientProtocol, conn: PortConnection) -> None:
    for data in proto.data_to_send():
        if data:
            await conn.send(data)
        else:  # the protocol is done with the connection
            await conn.send_eof()


async def _handshake(proto: ClientProtocol, conn: PortConnection) -> tuple[Response | None, list[Any]]:
    """The server's handshake response, and what came right after it (frames)."""
    while True:
        data = await conn.receive()
        if data:
            proto.receive_data(data)
        else:
            proto.receive_eof()
        events = proto.events_received()
        for index, event in enumerate(events):
            if isinstance(event, Response):
                return event, events[index + 1 :]
        if not data:
            return None, []


async def relay(
    scope: Scope,
    receive: Receive,
    send: Send,
    conn: PortConnection,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    host = next((v.decode("latin-1") for k, v in headers if k.lower() == b"host"), "localhost")
    proto = ClientProtocol(
        parse_uri(f"ws://{host}{target.decode('latin-1')}"),
        subprotocols=list(scope.get("subprotocols") or []) or None,
        max_size=MAX_MESSAGE_BYTES,
    )
    request = proto.connect()
    for name, value in headers:
        lowered = name.decode("latin-1").lower()
        if lowered not in request.headers and not lowered.startswith("sec-websocket-"):
            request.headers[lowered] = value.decode("latin-1")
    proto.send_request(request)
    await _flush(proto, conn)
    try:
        async with asyncio.timeout(HANDSHAKE_S):  # the client does not wait for ever either
            response, early = await _handshake(proto, conn)
    except TimeoutError:
        response, early = None, []
    if response is None or proto.handshake_exc is not None:
        await send({"type": "websocket.close", "code": 1008})  # the client sees 403
        return
    await send({"type": "websocket.accept", "subprotocol": response.headers.get("Sec-WebSocket-Protocol")})
    outbound = asyncio.create_task(_to_client(proto, conn, send, early))
    inbound = asyncio.create_task(_to_server(proto, conn, receive))
    try:
        await asyncio.wait((outbound, inbound), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (outbound, inbound):
            task.cancel()
        await asyncio.gather(outbound, inbound, return_exceptions=True)
    if not (outbound.done() and not outbound.cancelled() and outbound.exception() is None):
        # The connection to the server broke, or the client left: a close for a client still there.
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": ABNORMAL})


async def _to_client(proto: ClientProtocol, conn: PortConnection, send: Send, early: list[Any]) -> None:
    parts: list[bytes] = []
    text = False
    events = early
    while True:
        for frame in events:
            if not isinstance(frame, Frame):
                continue
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                parts, text = [bytes(frame.data)], frame.opcode is Opcode.TEXT
            elif frame.opcode is Opcode.CONT:
                parts.append(bytes(frame.data))
            elif frame.opcode is Opcode.CLOSE:
                await _flush(proto, conn)  # the protocol's reply to the close
                await send(
                    {
                        "type": "websocket.close",
                        "code": proto.close_code or 1000,
                        "reason": proto.close_reason,
                    }
                )
                return
            else:  # PING, PONG: the protocol answered a ping
                continue
            if frame.fin:
                body = b"".join(parts)
                parts = []
                message = {"text": body.decode()} if text else {"bytes": body}
                await send({"type": "websocket.send", **message})
        await _flush(proto, conn)
        data = await conn.receive()
        if not data:
            await send({"type": "websocket.close", "code": ABNORMAL})
            return
        proto.receive_data(data)
        events = proto.events_received()


async def _to_server(proto: ClientProtocol, conn: PortConnection, receive: Receive) -> None:
    while True:
        message = await receive()
        try:
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    proto.send_text(str(message["text"]).encode())
                else:
                    proto.send_binary(bytes(message.get("bytes") or b""))
            elif message["type"] == "websocket.disconnect":
                code = int(message.get("code") or 1000)
                try:
                    proto.send_close(code)
                except ProtocolError:  # 1005, 1006: codes a client reports but never sends
                    proto.send_close()
                await _flush(proto, conn)
                return
        except InvalidState:  # the server is closing: what is left goes nowhere
            with contextlib.suppress(InvalidState):
                await _flush(proto, conn)
            return
        await _flush(proto, conn)
