"""The HTTP server: uvicorn on httptools, with limits on request headers and problem+json refusals.

httptools has no cap of its own: it buffers a header line of any size (a 64 MiB header grew
the server by 90 MB), accepts any number of header fields, and a client trickling bytes keeps
a connection open for ever (slowloris). ``GuardedHttpToolsProtocol`` counts what the parser
hands over, bounds what it may buffer, and arms a timer until a request's headers are in.
Whatever the parser refuses (a limit, a control byte in a header) is answered as
``application/problem+json`` with a stable code, then the connection is closed.

The per-request cost is a few integer additions per header: the exec fast path stays cheap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from trove_core.errors import (
    HeadersTooLargeError,
    HeaderTimeoutError,
    MalformedRequestError,
    TroveError,
)
from trove_core.settings import Settings

log = logging.getLogger("trove.http")

PROBLEM_TYPE_BASE = "https://trove.dev/problems/"
LINGER_S = 2.0
RECV_BYTES = 1024 * 1024


@dataclass(frozen=True)
class HeaderLimits:
    max_bytes: int
    max_count: int
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HeaderLimits:
        return cls(
            max_bytes=settings.http_header_max_bytes,
            max_count=settings.http_header_max_count,
            timeout_s=settings.http_header_timeout_s,
        )


class _HeaderLimitExceeded(Exception):
    """Raised inside a parser callback; httptools re-raises it as the context of its own error."""


def problem_bytes(error: TroveError, request_id: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 problem+json response that closes the connection."""
    body = json.dumps(
        {
            "type": PROBLEM_TYPE_BASE + error.code,
            "title": error.title,
            "status": error.status,
            "detail": error.detail,
            "code": error.code,
            "request_id": request_id,
        }
    ).encode()
    head = [STATUS_LINE[error.status]]
    for name, value in default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [
        b"content-type: application/problem+json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"x-request-id: " + request_id.encode() + b"\r\n",
        b"x-content-type-options: nosniff\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits; ``limits`` is set by ``guarded_protocol``."""

    limits: ClassVar[HeaderLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0  # counted from the parser's callbacks (exact)
        self._raw_bytes = 0  # fed while headers are incomplete (bounds the parser's own buffer)
        self._header_count = 0
        self._headers_seen_in_feed = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._request_begun = False

    # Connection lifecycle
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if hasattr(transport, "max_size"):
            # asyncio's socket transport reads at most 256 KiB per wakeup: a 100 MB upload took
            # 400 rounds of recv, parse, pause, resume and a hop through the app's generators.
            transport.max_size = RECV_BYTES
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.limits.timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_headers:
            return
        if not self._request_begun:
            self.transport.close()  # a connection that never sent a byte: just hang up
            return
        self._refuse(
            HeaderTimeoutError(f"The request headers did not arrive within {self.limits.timeout_s:g} seconds")
        )

    # Parsing
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        counting = self._awaiting_headers
        self._headers_seen_in_feed = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeaderLimitExceeded):
                self._refuse(HeadersTooLargeError(str(exc.__context__)))
            else:
                self._refuse(MalformedRequestError(f"Malformed HTTP request: {exc}"))
            return
        if counting and self._awaiting_headers and not self._headers_seen_in_feed:
            # A header line still being read sits in the parser's buffer, not yet counted.
            self._raw_bytes += len(data)
            if self._raw_bytes > self.limits.max_bytes:
                self._refuse(HeadersTooLargeError(self._too_many_bytes()))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The clock runs from a request's first byte (a fresh connection: from the connect);
        # an idle keep-alive connection is uvicorn's keep-alive timer's business.
        self._request_begun = True
        if self._header_timer is None:
            self._arm_header_timer()
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._add_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_count:
            raise _HeaderLimitExceeded(f"The request has more than {self.limits.max_count} header fields")
        self._add_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _add_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_bytes:
            raise _HeaderLimitExceeded(self._too_many_bytes())

    def _too_many_bytes(self) -> str:
        return f"The request line and headers are larger than {self.limits.max_bytes} bytes"

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._request_begun = False
        self._headers_seen_in_feed = True
        self._raw_bytes = 0
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True

    def send_400_response(self, msg: str) -> None:
        # Only reached if uvicorn itself refuses something; keep the answer problem+json.
        self._refuse(MalformedRequestError(msg))

    def _refuse(self, error: TroveError) -> None:
        self._refused = True
        self._disarm_header_timer()
        request_id = "req_" + secrets.token_hex(8)
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.warning(
            "request %s from %s refused by the HTTP parser: %s %s",
            request_id,
            client,
            error.code,
            error.detail,
            extra={"request_id": request_id, "code": error.code, "client": client},
        )
        if self.transport.is_closing():
            return
        self.transport.write(problem_bytes(error, request_id, self.server_state.default_headers))
        if self.transport.can_write_eof():
            # Lingering close: closing a socket with unread input sends a reset, which can
            # destroy the answer before the client reads it. Send it and a FIN, discard what
            # still comes (``data_received``), and close for good shortly after.
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


def guarded_protocol(limits: HeaderLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``limits``."""
    return type("TroveHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def forwarded_allow_ips(settings: Settings) -> list[str]:
    return [part.strip() for part in settings.forwarded_allow_ips.split(",") if part.strip()]


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration ``trove-server serve`` (and the test servers) run with."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": guarded_protocol(HeaderLimits.from_settings(settings)),
        # X-Forwarded-For / -Proto are believed only from these peers (TROVE_FORWARDED_ALLOW_IPS).
        "proxy_headers": True,
        "forwarded_allow_ips": forwarded_allow_ips(settings),
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
