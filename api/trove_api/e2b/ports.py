"""A sandbox's other ports (E2B's ``get_host``): HTTP relayed to the server a command started inside.

A call under ``/e2b`` that names a sandbox (``E2b-Sandbox-Id``) and a port other than envd's
(``E2b-Sandbox-Port``; host-style names are turned into those headers by ``hosts``) is
authenticated (``access.port_sandbox``), then spoken as HTTP/1.1 (h11) over a TCP connection
the runtime opens inside the sandbox (``connect_port``): one connection per request, bodies
streamed both ways under the connection's flow control, so memory stays flat whatever the
sizes. ``/e2b/<rest>`` reaches the server as ``/<rest>``. WebSocket upgrades go to
``port_socket``. The credentials that opened the way are not passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import h11
from starlette.datastructures import State
from starlette.responses import JSONResponse

from trove_api.e2b import port_socket
from trove_api.e2b.access import CREDENTIAL_HEADERS, PORT_HEADER, SANDBOX_HEADER, port_sandbox, target_port
from trove_api.e2b.records import SandboxRecord
from trove_api.e2b.request_checks import E2bApiError
from trove_api.e2b.sandboxes import SandboxService, owner_caller
from trove_api.problems import PROBLEM_MEDIA_TYPE
from trove_core.errors import RateLimitedError, SandboxPortClosedError, TroveError
from trove_core.runtime import PortConnection

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Hop-by-hop (RFC 9110 7.6.1) and Trove's own routing headers: not the sandbox server's business.
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"transfer-encoding")
)
DROPPED = (
    HOP_BY_HOP
    # uvicorn has already answered an ``Expect: 100-continue`` (when the body was first read).
    | {SANDBOX_HEADER.encode(), PORT_HEADER.encode(), b"expect"}
    | {name.encode() for name in CREDENTIAL_HEADERS}
)
MAX_HEAD_BYTES = 64 * 1024  # the response's status line and headers
# Each open connection may hold a flow-control window in the API and in the agent.
MAX_OPEN_PER_SANDBOX = 64


def forwarded_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's request headers as the sandbox server gets them."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return [(k, v) for k, v in headers if k.lower() not in DROPPED and k.lower() not in named]


def response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The sandbox server's response headers as the client gets them (the server frames the body)."""
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


def inner_target(scope: Scope, prefix: str) -> bytes:
    """``/e2b/a/b?q`` as the sandbox server sees it: ``/a/b?q`` (the raw bytes, escapes kept)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    rest = raw[len(prefix) :] if raw.startswith(prefix.encode()) else raw
    query = scope.get("query_string", b"")
    return (rest or b"/") + (b"?" + query if query else b"")


async def answer_error(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """E2B's body for what E2B answers (auth, no such sandbox); a problem for Trove's own errors."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})
        return
    if isinstance(exc, E2bApiError):
        response = JSONResponse({"code": exc.status, "message": exc.message}, status_code=exc.status)
    else:
        assert isinstance(exc, TroveError)
        body = {
            "type": "https://trove.dev/problems/" + exc.code,
            "title": exc.title,
            "status": exc.status,
            "detail": exc.detail,
            "code": exc.code,
            "message": exc.detail,  # what E2B's own error bodies call it
        }
        response = JSONResponse(body, status_code=exc.status, media_type=PROBLEM_MEDIA_TYPE)
    await response(scope, receive, send)


class PortProxy:
    def __init__(self, app: Callable[..., Any], *, state: State, prefix: str) -> None:
        self.app = app
        self.state = state
        self.prefix = prefix
        self._open: dict[str, int] = {}  # connections open per sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._for_a_port(scope):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            port = target_port(headers)
        except E2bApiError as exc:
            await answer_error(scope, receive, send, exc)
            return
        if port is None:  # envd's own port: Trove's routes
            await self.app(scope, receive, send)
            return
        svc: SandboxService = self.state.e2b
        try:
            rec = await port_sandbox(svc, headers)
        except (E2bApiError, TroveError) as exc:
            await answer_error(scope, receive, send, exc)
            return
        sandbox = rec.sandbox_id
        if self._open.get(sandbox, 0) >= MAX_OPEN_PER_SANDBOX:
            busy = RateLimitedError(
                f"{MAX_OPEN_PER_SANDBOX} connections to this sandbox's ports are open; close one first",
                retry_after=1,
            )
            await answer_error(scope, receive, send, busy)
            return
        self._open[sandbox] = self._open.get(sandbox, 0) + 1
        try:
            await self._proxy(scope, receive, send, svc, rec, port)
        finally:
            self._open[sandbox] -= 1
            if not self._open[sandbox]:
                del self._open[sandbox]

    async def _proxy(
        self, scope: Scope, receive: Receive, send: Send, svc: SandboxService, rec: SandboxRecord, port: int
    ) -> None:
        try:
            owner = owner_caller(rec)
            ns = await svc.ctx.namespaces.ensure(owner.workspace_id, rec.sandbox_id, owner.actor)
            conn = await svc.ctx.runtime.connect_port(ns, port)
        except TroveError as exc:
            await answer_error(scope, receive, send, exc)
            return
        try:
            target = inner_target(scope, self.prefix)
            if scope["type"] == "websocket":
                forwarded = forwarded_headers(list(scope["headers"]))
                await port_socket.relay(scope, receive, send, conn, target, forwarded)
            else:
                await relay_http(scope, receive, send, conn, target)
        finally:
            await conn.aclose()

    def _for_a_port(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            return False
        return any(k == PORT_HEADER.encode() for k, _ in scope["headers"])


class _Closed(Exception):
    """The sandbox server closed the connection before a whole response."""


async def relay_http(scope: Scope, receive: Receive, send: Send, conn: PortConnection, target: bytes) -> None:
    client = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
    # One connection per request: the server closes it after its answer, as a client leaving would.
    head = [*forwarded_headers(list(scope["headers"])), (b"connection", b"close")]
    if not any(k.lower() == b"host" for k, _ in head):
        head.append((b"host", b"localhost"))
    sent = [k.lower() for k, _ in scope["headers"]]
    if b"transfer-encoding" in sent and b"content-length" not in sent:
        head.append((b"transfer-encoding", b"chunked"))  # re-framed by h11 as it is streamed on
    await conn.send(client.send(h11.Request(method=scope["method"], target=target, headers=head)))
    started = left = False
    uploading = True

    async def leave() -> None:
        nonlocal left
        left = True
        await conn.aclose()  # the reads below end

    async def upload() -> None:
        nonlocal uploading
        while uploading:
            message = await receive()
            if message["type"] == "http.disconnect":
                await leave()
                return
            body = message.get("body", b"")
            if body and client.our_state is h11.SEND_BODY:
                await conn.send(client.send(h11.Data(data=body)))
            if not message.get("more_body", False):
                if client.our_state is h11.SEND_BODY:
                    await conn.send(client.send(h11.EndOfMessage()))
                uploading = False
        # Then only a disconnect can come.
        if (await receive())["type"] == "http.disconnect":
            await leave()

    uploader = asyncio.create_task(upload())
    try:
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await conn.receive())  # b"": the server closed its side
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                await send(
                    {
                        "type": "http.response.start",
                        "status": event.status_code,
                        "headers": response_headers(list(event.headers)),
                    }
                )
                started = True
            elif isinstance(event, h11.Data):
                await send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
            elif isinstance(event, h11.EndOfMessage):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            else:  # ConnectionClosed before the end of a response
                raise _Closed
    except (_Closed, h11.RemoteProtocolError, TroveError) as exc:
        if left:
            return
        if started:
            raise  # the status is out: only a cut connection tells the client
        detail = "closed the connection without an answer" if isinstance(exc, _Closed) else str(exc)
        await answer_error(scope, receive, send, _bad_gateway(conn, detail))
    finally:
        uploader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await uploader


def _bad_gateway(conn: PortConnection, detail: str) -> TroveError:
    port = getattr(conn, "port", "?")
    return SandboxPortClosedError(f"The server on port {port} in the sandbox {detail}")
