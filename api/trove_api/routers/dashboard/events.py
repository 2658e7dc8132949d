"""Dashboard: live events, the same stream `trove webhooks listen` reads (the event feed's SSE,
narrowed by the signed-in key's scope), with filters; the page pauses and resumes it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from trove_api.events.types import ALL_TYPES
from trove_api.routers.dashboard.common import DashboardRoute, ViewDep
from trove_api.services.events import scope_for

router = APIRouter(prefix="/dashboard/events", route_class=DashboardRoute, include_in_schema=False)

Filter = Annotated[str | None, Query(max_length=1000)]


@router.get("")
async def events_page(view: ViewDep, namespace: Filter = None, types: Filter = None) -> Response:
    scope = scope_for(view.caller, namespace=namespace, types=types or None)
    recent = await view.ctx.event_feed.page(scope, limit=50, since=None, cursor=None)
    return view.page(
        "events.html",
        nav="events",
        events=recent.events,
        all_types=ALL_TYPES,
        namespace=namespace or "",
        types=types or "",
    )


@router.get("/stream")
async def events_stream(view: ViewDep, namespace: Filter = None, types: Filter = None) -> Response:
    scope = scope_for(view.caller, namespace=namespace, types=types or None)
    # The browser reconnects on its own with Last-Event-ID: nothing in between is lost.
    after = await view.ctx.event_feed.resume_point(scope, view.request.headers.get("last-event-id"))
    return StreamingResponse(
        view.ctx.event_feed.stream(scope, after=after, key_id=view.caller.key_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
