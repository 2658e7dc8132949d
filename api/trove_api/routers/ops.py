"""Operational endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from trove_api.deps import ContextDep
from trove_api.metrics import CONTENT_TYPE
from trove_api.schemas.common import problems
from trove_core.errors import UnavailableError

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=problems(503))
async def readyz(ctx: ContextDep, request: Request) -> Health:
    """The database answers and what a crash left is resolved; the server can take traffic."""
    drain = getattr(request.app.state, "drain", None)
    if drain is not None and drain.started.is_set():
        # SIGTERM came: still serving, but load balancers should send new calls elsewhere.
        raise UnavailableError("The server is shutting down", retry_after=1)
    if not ctx.sweeper.first_pass_done.is_set():
        # Until the first sweep has resolved the pending events a crash left, a client could
        # see a change on disk whose event is not in the log yet.
        raise UnavailableError("The server is recovering what a restart interrupted", retry_after=1)

    try:
        await ctx.db.ping(timeout_s=5)
    except Exception as exc:
        # The driver's message names the database host, port or file: log it, never answer it.
        raise UnavailableError(
            "The database is not reachable", retry_after=5, internal=f"Database not reachable: {exc!r}"
        ) from exc
    return Health(status="ready")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."}},
)
async def metrics(ctx: ContextDep) -> Response:
    """Prometheus metrics (requests, latency, execs)."""
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)
