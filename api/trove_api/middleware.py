"""Pure-ASGI middleware (streaming stays intact): request ids, body caps, access metrics."""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trove_api.logs import begin_request
from trove_api.metrics import Metrics
from trove_core.errors import PayloadTooLargeError
from trove_core.wire import HEADER_REQUEST_ID

access_log = logging.getLogger("trove.access")
_INCOMING_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
NOSNIFF = (b"x-content-type-options", b"nosniff")
_SET_HERE = frozenset({b"x-request-id", NOSNIFF[0]})


class RequestContextMiddleware:
    """Gives every request an id (echoed as ``X-Request-Id``), caps bodies, records metrics.

    Every answer also carries ``X-Content-Type-Options: nosniff``.

    Bodies of every method except ``PUT /files/…`` (which streams to disk and has its own,
    larger cap) are limited to ``json_body_max_bytes``: a declared length over the cap is
    refused before reading, an undeclared one when the running count passes it.
    """

    def __init__(self, app: ASGIApp, *, json_body_max_bytes: int) -> None:
        self.app = app
        self.json_body_max_bytes = json_body_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = (
            incoming if incoming and _INCOMING_ID.fullmatch(incoming) else "req_" + secrets.token_hex(8)
        )
        scope.setdefault("state", {})["request_id"] = request_id
        begin_request(request_id)
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _SET_HERE]
                headers.append((HEADER_REQUEST_ID.lower().encode(), request_id.encode()))
                # Every answer, streams and errors included: no client may guess another type.
                headers.append(NOSNIFF)
                message["headers"] = headers
            await send(message)

        capped = receive
        if not _is_upload(scope):
            declared = _header(scope, b"content-length")
            limit = self.json_body_max_bytes
            if declared and declared.isdigit() and int(declared) > limit:
                too_large = PayloadTooLargeError(
                    f"Request body is {declared} bytes; the limit is {limit} bytes"
                )

                async def refuse() -> Message:
                    raise too_large

                capped = refuse
            else:
                seen = 0

                async def counting() -> Message:
                    nonlocal seen
                    message = await receive()
                    if message["type"] == "http.request":
                        seen += len(message.get("body", b""))
                        if seen > limit:
                            raise PayloadTooLargeError(
                                f"Request body is larger than the limit of {limit} bytes"
                            )
                    return message

                capped = counting
        try:
            await self.app(scope, capped, send_with_id)
        finally:
            metrics = _metrics_of(scope)
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            elapsed = time.perf_counter() - started
            if metrics is not None:
                metrics.requests.labels(method, template, str(status_holder["status"])).inc()
                metrics.latency.labels(method, template).observe(elapsed)
            access_log.info(
                "%s %s %s %.1fms",
                method,
                scope.get("path", ""),
                status_holder["status"],
                elapsed * 1000,
                extra={
                    "method": method,
                    "path": scope.get("path", ""),
                    "route": template,
                    "status": status_holder["status"],
                    "duration_ms": round(elapsed * 1000, 1),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )


def _metrics_of(scope: Scope) -> Metrics | None:
    ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
    return getattr(ctx, "metrics", None)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _is_upload(scope: Scope) -> bool:
    path = str(scope.get("path", ""))
    # The E2B API's envd upload (POST /e2b/files) is capped by the file service as PUT /files is.
    return (scope.get("method") == "PUT" and path.startswith("/files/")) or (
        scope.get("method") == "POST" and path == "/e2b/files"
    )
