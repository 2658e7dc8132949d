"""GET /v1/workspaces/{ws}/events: the paged event feed `trove tail` and `trove events list` poll."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from trove_api.deps import ContextDep, WorkspaceCallerDep
from trove_api.schemas.common import problems
from trove_api.schemas.events import EventPage
from trove_api.services.events import scope_for

router = APIRouter(tags=["events"])


@router.get(
    "/v1/workspaces/{workspace_id}/events",
    response_model=EventPage,
    responses=problems(400, 401, 403),
)
async def list_events(
    workspace_id: str,
    caller: WorkspaceCallerDep,
    ctx: ContextDep,
    limit: Annotated[int, Query(description="Page size, clamped to 1..1000.")] = 50,
    namespace: Annotated[str | None, Query(description="Only this namespace's events.")] = None,
    types: Annotated[str | None, Query(description="Comma-separated event types.")] = None,
    since: Annotated[
        str | None,
        Query(description="Exclusive lower bound (ISO-8601); the page is then the oldest events after it."),
    ] = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` of a previous page.")] = None,
) -> EventPage:
    """Events newest first. Without `since`: the newest `limit`; with it: the oldest `limit` after it.

    Keys locked to a namespace see only that namespace, and no key or workspace events.
    """
    scope = scope_for(caller, namespace=namespace, types=types)
    page = await ctx.event_feed.page(scope, limit=limit, since=since, cursor=cursor)
    return EventPage.model_validate({"events": page.events, "next_cursor": page.next_cursor})
