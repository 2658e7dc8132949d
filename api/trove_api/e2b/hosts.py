"""E2B's host-name scheme: ``api.<domain>`` and ``<port>-<sandboxID>.<domain>`` onto ``/e2b`` paths.

For Trove behind a wildcard DNS name (clients set ``E2B_DOMAIN``): a request to
``49983-<id>.<domain>/files`` becomes ``/e2b/files`` with the ``E2b-Sandbox-Id`` and
``E2b-Sandbox-Port`` headers the path-style addressing carries. Other hosts pass untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
_SANDBOX_HOST = re.compile(r"^(?P<port>[0-9]{1,5})-(?P<sandbox>[a-z0-9][a-z0-9._-]{0,127})$")


class HostRouting:
    def __init__(self, app: Callable[..., Any], *, domain: str, prefix: str) -> None:
        self.app = app
        self.domain = domain.lower().strip(".")
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = self._route(scope)
        await self.app(scope, receive, send)

    def _route(self, scope: Scope) -> Scope:
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        host = next((v for k, v in headers if k == b"host"), b"").decode("latin-1").lower()
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        suffix = "." + self.domain
        if not host.endswith(suffix):
            return scope
        label = host[: -len(suffix)]
        if label == "api":
            extra: list[tuple[bytes, bytes]] = []
        elif match := _SANDBOX_HOST.match(label):
            # The host names the sandbox: headers a client sent would contradict it.
            headers = [(k, v) for k, v in headers if k not in (b"e2b-sandbox-id", b"e2b-sandbox-port")]
            extra = [
                (b"e2b-sandbox-id", match["sandbox"].encode()),
                (b"e2b-sandbox-port", match["port"].encode()),
            ]
        else:
            return scope
        path = self.prefix + scope["path"]
        return {
            **scope,
            "path": path,
            "raw_path": path.encode(),
            "headers": headers + extra,
        }
