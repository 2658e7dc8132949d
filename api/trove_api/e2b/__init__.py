"""Speak E2B: the official ``e2b`` SDK against Trove (issue 17), on the same namespaces and keys.

``E2B_API_URL`` and ``E2B_SANDBOX_URL`` are both ``{base}/e2b``: the control plane
(``control``, over ``sandboxes``) and the in-sandbox envd API (``envd_http`` for ``/files`` and
``/health``, ``filesystem`` for the Connect RPC service), told apart by the
``E2b-Sandbox-Id`` header the SDK sends on in-sandbox calls; ``process`` is envd's process
service (commands and terminals) over ``commands``. ``hosts`` maps E2B's host names
(``api.<domain>``, ``<port>-<sandboxID>.<domain>``) onto those paths. ``ports`` (HTTP) and
``port_socket`` (WebSocket) proxy calls for any other port to the server a command started in
the sandbox (``get_host``), over the runtime's ``connect_port``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request

from trove_api.context import AppContext
from trove_api.e2b import control, envd_http
from trove_api.e2b.commands import E2bProcesses
from trove_api.e2b.envd.filesystem_connect import FilesystemASGIApplication
from trove_api.e2b.envd.process_connect import ProcessASGIApplication
from trove_api.e2b.filesystem import FilesystemService
from trove_api.e2b.hosts import HostRouting
from trove_api.e2b.ports import PortProxy
from trove_api.e2b.process import ProcessService
from trove_api.e2b.sandboxes import SandboxService
from trove_core.errors import E2bNotImplementedError
from trove_core.settings import Settings

PREFIX = "/e2b"
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[..., Any], Callable[..., Any]], Awaitable[None]]


def _under_prefix(app: Any) -> ASGIApp:
    """connectrpc finds its methods by path minus ``root_path``: the mount's root is ``/e2b``."""

    async def shim(scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        await app({**scope, "root_path": PREFIX}, receive, send)

    return shim


def install(app: FastAPI, settings: Settings) -> FilesystemService:
    app.include_router(control.router)
    app.include_router(envd_http.router)
    filesystem = FilesystemService(lambda: app.state.e2b)
    app.mount(f"{PREFIX}/filesystem.Filesystem", _under_prefix(FilesystemASGIApplication(filesystem)))
    process = ProcessService(lambda: app.state.e2b, lambda: app.state.e2b_processes)
    app.mount(f"{PREFIX}/process.Process", _under_prefix(ProcessASGIApplication(process)))

    @app.api_route(
        PREFIX + "/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
    )
    async def not_yet(request: Request, rest: str) -> None:
        raise E2bNotImplementedError(
            f"{request.method} /e2b/{rest[:200]}: Trove's E2B-compatible API does not serve this yet "
            "(see the README's 'Using the E2B SDK' for what is supported)"
        )

    return filesystem


def route_hosts(app: FastAPI, settings: Settings) -> None:
    """E2B's host names; added last, so it is outermost and every other layer sees ``/e2b`` paths.

    Calls to a sandbox's other ports go to ``PortProxy`` just inside it, before Trove's own
    layers: the answer is the sandbox server's, bodies and all.
    """
    app.add_middleware(PortProxy, state=app.state, prefix=PREFIX)
    if settings.e2b_domain:
        app.add_middleware(HostRouting, domain=settings.e2b_domain, prefix=PREFIX)


@contextlib.asynccontextmanager
async def running(app: FastAPI, ctx: AppContext, filesystem: FilesystemService) -> Any:
    """The E2B service for the app's lifetime, and its timeout sweeper."""
    svc = SandboxService(ctx)
    app.state.e2b = svc
    app.state.e2b_processes = processes = E2bProcesses(ctx)
    svc.on_end.append(processes.end_sandbox)
    # Before the first request: no sandbox runs a command without its egress rules.
    await svc.restore_egress()
    sweeper = asyncio.create_task(svc.run_sweeper(), name="e2b-sweeper")
    try:
        yield svc
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await svc.aclose()
        await filesystem.aclose()
        await processes.aclose()
