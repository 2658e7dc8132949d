"""Operational endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import text

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
async def readyz(ctx: ContextDep) -> Health:
    """The database answers; the server can take traffic."""

    def ping() -> None:
        with ctx.db.read() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(asyncio.to_thread(ping), timeout=5)
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
