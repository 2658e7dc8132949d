"""Dashboard: the live terminal, a WebSocket carrying a shell's PTY (``services.terminal``).

Browser → server: binary frames are keystrokes (the PTY's stdin); text frames are JSON controls,
``{"type": "resize", "rows": R, "cols": C}``. Server → browser: binary frames are PTY output;
the socket closes (1000) when the shell exits. Disconnecting hangs the shell up.

A WebSocket handshake carries the session cookie even when another site opens it, and the
browser's same-origin policy does not apply to it: so the handshake must come from our own
pages (``Origin`` names the ``Host`` it was sent to) and carry the session's CSRF token in the
query. Refusals close before accepting, which the server answers with HTTP 403."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket
from starlette.types import Message

from trove_api.context import AppContext
from trove_api.routers.dashboard.common import COOKIE
from trove_api.services.dashboard_sessions import Session
from trove_api.services.terminal import TerminalService, TerminalSession, pty_size
from trove_core.errors import TroveError, UnauthenticatedError
from trove_core.runtime import ProcessOutput

router = APIRouter(prefix="/dashboard/namespaces", include_in_schema=False)
log = logging.getLogger("trove.dashboard")

POLICY_VIOLATION = 1008
INPUT_MAX_BYTES = 64 * 1024  # one paste; larger messages end the session
HELPERS_STOP_S = 2.0


def same_origin(websocket: WebSocket) -> bool:
    """``Origin`` is this server as the browser addressed it (scheme and host:port)."""
    origin, host = websocket.headers.get("origin"), websocket.headers.get("host")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    secure = websocket.url.scheme == "wss"
    return parts.scheme == ("https" if secure else "http") and parts.netloc.lower() == host.lower()


async def authorize(websocket: WebSocket, ctx: AppContext) -> Session | None:
    if not same_origin(websocket):
        return None
    try:
        session = await ctx.dashboard_sessions.resolve(websocket.cookies.get(COOKIE))
    except UnauthenticatedError:
        return None
    if not ctx.dashboard_sessions.check_csrf(session, websocket.query_params.get("csrf")):
        return None
    return session


def int_param(websocket: WebSocket, name: str, default: int) -> int:
    try:
        return int(websocket.query_params.get(name, default))
    except ValueError:
        return 0  # refused by pty_size


@router.websocket("/{name}/terminal")
async def terminal(websocket: WebSocket, name: str) -> None:
    ctx: AppContext = websocket.app.state.ctx
    session = await authorize(websocket, ctx)
    if session is None:
        await websocket.close(code=POLICY_VIOLATION)
        return
    service = ctx.terminals
    try:
        size = pty_size(int_param(websocket, "rows", 24), int_param(websocket, "cols", 80))
        term = await service.open(session.caller, name, size)
    except TroveError as exc:
        # Tenancy, a bad size, a full disk: refused at the handshake like any other refusal.
        log.info("terminal refused for %s: %s", name[:140], exc.detail)
        await websocket.close(code=POLICY_VIOLATION, reason=exc.code)
        return
    try:
        await websocket.accept()  # inside the try: a browser gone by now still gets its shell closed
        await serve(websocket, ctx, service, term)
    finally:
        await service.close(term)


async def serve(
    websocket: WebSocket, ctx: AppContext, service: TerminalService, term: TerminalSession
) -> None:
    pump = asyncio.create_task(pump_output(websocket, service, term))
    revoked = asyncio.create_task(service.until_revoked(term))
    signed_out = asyncio.create_task(until_signed_out(ctx, websocket.cookies.get(COOKIE)))
    try:
        await read_input(websocket, service, term, {pump, revoked, signed_out})
    finally:
        key_revoked = any(t.done() and not t.cancelled() for t in (revoked, signed_out))
        helpers = {pump, revoked, signed_out}
        for task in helpers:
            task.cancel()
        # Bounded: a helper that does not end when cancelled must not keep the shell open.
        done, _ = await asyncio.wait(helpers, timeout=HELPERS_STOP_S)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: a browser gone mid-send is the usual one
        with contextlib.suppress(Exception):
            await websocket.close(code=POLICY_VIOLATION if key_revoked else 1000)


async def until_signed_out(ctx: AppContext, cookie: str | None) -> None:
    """Returns once the sign-in behind the socket has ended (signed out, expired), looked up
    again as often as SSE streams look up their keys."""
    while True:
        await asyncio.sleep(ctx.settings.sse_keepalive_s)
        try:
            await ctx.dashboard_sessions.resolve(cookie)
        except UnauthenticatedError:
            return


async def pump_output(websocket: WebSocket, service: TerminalService, term: TerminalSession) -> None:
    """PTY output to the browser, one frame per chunk; the next chunk is read only once the
    last is sent, so a slow browser slows the reads (the runtime drops its oldest output)
    rather than anything here growing."""
    async for item in service.output(term):
        if not isinstance(item, ProcessOutput):
            break  # ProcessEnd: the shell exited
        if item.dropped:
            await websocket.send_bytes(f"\r\n[{item.dropped} bytes of output skipped]\r\n".encode())
        await websocket.send_bytes(item.data)
    await websocket.close(code=1000, reason="shell exited")


async def read_input(
    websocket: WebSocket, service: TerminalService, term: TerminalSession, stoppers: set[asyncio.Task[None]]
) -> None:
    """Keystrokes and resizes until the browser leaves, or a stopper ends (the shell exited, the
    key was revoked)."""
    while not any(task.done() for task in stoppers):
        receiving: asyncio.Task[Message] = asyncio.create_task(websocket.receive())
        done, _ = await asyncio.wait({receiving, *stoppers}, return_when=asyncio.FIRST_COMPLETED)
        if receiving not in done:
            receiving.cancel()
            return
        message = receiving.result()
        if message["type"] == "websocket.disconnect":
            return
        data, text = message.get("bytes"), message.get("text")
        try:
            if data is not None:
                if len(data) > INPUT_MAX_BYTES:
                    return
                await service.write(term, data)
            elif text is not None:
                await control(service, term, text)
        except TroveError as exc:
            log.info("terminal input refused: %s", exc.detail)
            return


async def control(service: TerminalService, term: TerminalSession, text: str) -> None:
    try:
        message = json.loads(text)
    except ValueError:
        return
    if isinstance(message, dict) and message.get("type") == "resize":
        rows, cols = message.get("rows"), message.get("cols")
        if isinstance(rows, int) and isinstance(cols, int):
            await service.resize(term, pty_size(rows, cols))
