"""The dashboard's routes (``/dashboard``): thin handlers over the same services as the HTTP API;
its templates and assets are the top-level ``trove_api.dashboard`` package."""

from fastapi import APIRouter

from trove_api.routers.dashboard import (
    events,
    keys,
    namespaces,
    overview,
    session,
    snapshots,
    terminal,
    webhooks,
)

router = APIRouter()
for part in (session, overview, namespaces, snapshots, events, keys, webhooks, terminal):
    router.include_router(part.router)
