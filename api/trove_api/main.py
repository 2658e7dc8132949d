"""create_app(settings): the FastAPI application; its lifespan owns the AppContext."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from trove_api import e2b, problems
from trove_api.context import AppContext
from trove_api.middleware import RequestContextMiddleware
from trove_api.routers import dashboard, device, events, files, identity, ops, snapshots, webhooks
from trove_api.routers import exec as exec_router
from trove_core.settings import Settings

DESCRIPTION = """\
Trove: a persistent POSIX workspace per agent namespace, a sandboxed shell, scoped keys.

Wire-compatible with the official `trove-sdk` client. Authenticate every call with
`Authorization: Bearer <key>`; filesystem calls name their namespace in `X-Namespace`.
Errors are `application/problem+json` with a string `detail` and a stable `code`.
"""


def create_app(settings: Settings, context: AppContext | None = None) -> FastAPI:
    """The app; ``context`` lets a caller (tests, ``trove-server serve``) open it beforehand."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Runtime and database calls run in threads; the default pool (cores + 4) is too
        # small for dozens of concurrent execs and streams.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=64, thread_name_prefix="trove")
        )
        ctx = context or AppContext.open(settings)
        app.state.ctx = ctx
        await ctx.start()
        try:
            async with e2b.running(app, ctx, e2b_filesystem):
                yield
        finally:
            await ctx.aclose()

    app = FastAPI(
        title="Trove",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    problems.install(app)
    app.include_router(exec_router.router)
    app.include_router(files.router)
    app.include_router(snapshots.router)
    app.include_router(identity.router)
    app.include_router(ops.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(device.router)
    app.include_router(dashboard.router)
    e2b_filesystem = e2b.install(app, settings)  # after every other route: it ends with a catch-all
    app.add_middleware(RequestContextMiddleware, json_body_max_bytes=settings.json_body_max_bytes)
    e2b.route_hosts(app, settings)
    return app
