"""Shutdown drain: on SIGTERM keep serving a while, unready, before uvicorn's graceful stop.

Behind a Service or load balancer the address of a stopping pod leaves the routing tables some
time after SIGTERM. Until then new requests still arrive; if the listener were already closed
they would fail. So for ``TROVE_SHUTDOWN_DRAIN_S`` the server answers as usual, but /readyz says
503 and every response carries ``Connection: close`` (a keep-alive client reconnects, and lands
on a pod that stays); then uvicorn stops accepting and lets in-flight calls finish.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Drain:
    """Whether the server is draining (set once, on the first SIGTERM)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = threading.Event()


class CloseWhileDraining:
    """ASGI middleware: while draining, each response closes its connection."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.drain.started.is_set():
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*kept, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM starts the drain; the graceful stop follows it."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.drain.seconds <= 0 or self.drain.started.is_set():
            super().handle_exit(sig, frame)
            return
        self.drain.started.set()
        # should_exit is polled by uvicorn's main loop: setting it from a timer thread is how
        # its own signal handler works too.
        stop: Any = super().handle_exit
        timer = threading.Timer(self.drain.seconds, stop, (sig, frame))
        timer.daemon = True
        timer.start()
