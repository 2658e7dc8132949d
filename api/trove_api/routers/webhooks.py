"""/v1/workspaces/{ws}/webhooks: create, list, delete, test, the SSE stream, deliveries, rotate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from trove_api.deps import ContextDep, WorkspaceAdminDep, WorkspaceCallerDep
from trove_api.schemas.common import problems
from trove_api.schemas.webhooks import (
    Delivery,
    DeliveryDetail,
    DeliveryList,
    SecretRotated,
    WebhookCreated,
    WebhookCreateRequest,
    WebhookDeleted,
    WebhookList,
    WebhookTestResult,
)
from trove_api.services.events import scope_for

router = APIRouter(tags=["webhooks"])
BASE = "/v1/workspaces/{workspace_id}/webhooks"


# Declared before every /webhooks/{id} route, so "stream" is never taken for an id.
@router.get(
    f"{BASE}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **problems(401, 403)},
)
async def stream_events(
    workspace_id: str,
    caller: WorkspaceCallerDep,
    ctx: ContextDep,
    namespace: Annotated[str | None, Query(description="Only this namespace's events.")] = None,
    types: Annotated[str | None, Query(description="Comma-separated event types.")] = None,
    last_event_id: Annotated[str | None, Header(description="Resume after this event id.")] = None,
) -> StreamingResponse:
    """Server-Sent Events: a `connected` event, then one `data:` line of JSON per event (LF framing).

    `trove webhooks listen` reads it. Keep-alive comments every few seconds; resumable with
    `Last-Event-ID`. Admin and workspace keys; locked keys see only their namespace. The
    stream ends when its key is revoked.
    """
    scope = scope_for(caller, namespace=namespace, types=types)
    after = await ctx.event_feed.resume_point(scope, last_event_id)
    return StreamingResponse(
        ctx.event_feed.stream(scope, after=after, key_id=caller.key_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(BASE, response_model=WebhookCreated, status_code=201, responses=problems(401, 403, 422))
async def create_webhook(
    workspace_id: str, body: WebhookCreateRequest, caller: WorkspaceAdminDep, ctx: ContextDep
) -> WebhookCreated:
    """Subscribe a URL (admin only). `signing_secret` is in this response and nowhere else."""
    rec, secret = await ctx.webhooks.create(
        caller,
        url=body.url,
        events=body.events,
        namespace=body.namespace,
        description=body.description,
    )
    return WebhookCreated(**rec.model_dump(), signing_secret=secret)


@router.get(BASE, response_model=WebhookList, responses=problems(401, 403))
async def list_webhooks(workspace_id: str, caller: WorkspaceAdminDep, ctx: ContextDep) -> WebhookList:
    """Registered endpoints with their last delivery's health."""
    records = await ctx.webhooks.list(workspace_id)
    return WebhookList(webhooks=records)


@router.delete(f"{BASE}/{{webhook_id}}", response_model=WebhookDeleted, responses=problems(401, 403, 404))
async def delete_webhook(
    workspace_id: str, webhook_id: str, caller: WorkspaceAdminDep, ctx: ContextDep
) -> WebhookDeleted:
    """Remove an endpoint; its queued deliveries are dropped. A second delete is a 404."""
    await ctx.webhooks.delete(caller, webhook_id)
    return WebhookDeleted(webhook_id=webhook_id, deleted=True)


@router.post(
    f"{BASE}/{{webhook_id}}/test", response_model=WebhookTestResult, responses=problems(401, 403, 404)
)
async def test_webhook(
    workspace_id: str, webhook_id: str, caller: WorkspaceAdminDep, ctx: ContextDep
) -> WebhookTestResult:
    """Deliver a `webhook.test` event now and report the receiver's answer (200 even on failure)."""
    result = await ctx.webhooks.test(caller, webhook_id)
    return result


@router.post(
    f"{BASE}/{{webhook_id}}/rotate-secret", response_model=SecretRotated, responses=problems(401, 403, 404)
)
async def rotate_secret(
    workspace_id: str, webhook_id: str, caller: WorkspaceAdminDep, ctx: ContextDep
) -> SecretRotated:
    """Replace the signing secret (shown once). Deliveries from now on use the new one."""
    secret = await ctx.webhooks.rotate_secret(caller, webhook_id)
    return SecretRotated(webhook_id=webhook_id, signing_secret=secret)


@router.get(
    f"{BASE}/{{webhook_id}}/deliveries", response_model=DeliveryList, responses=problems(401, 403, 404)
)
async def list_deliveries(
    workspace_id: str,
    webhook_id: str,
    caller: WorkspaceAdminDep,
    ctx: ContextDep,
    limit: Annotated[int, Query(description="At most this many (1..500).")] = 50,
    status: Annotated[str | None, Query(description="pending, delivered or failed.")] = None,
) -> DeliveryList:
    """The delivery log, newest first."""
    rows = await ctx.webhooks.deliveries(caller, webhook_id, limit=limit, status=status)
    return DeliveryList.model_validate({"deliveries": rows})


@router.get(
    f"{BASE}/{{webhook_id}}/deliveries/{{delivery_id}}",
    response_model=DeliveryDetail,
    responses=problems(401, 403, 404),
)
async def get_delivery(
    workspace_id: str, webhook_id: str, delivery_id: str, caller: WorkspaceAdminDep, ctx: ContextDep
) -> DeliveryDetail:
    """One delivery with every attempt (status, error, duration, response excerpt)."""
    row = await ctx.webhooks.delivery(caller, webhook_id, delivery_id)
    return DeliveryDetail.model_validate(row)


@router.post(
    f"{BASE}/{{webhook_id}}/deliveries/{{delivery_id}}/retry",
    response_model=Delivery,
    responses=problems(401, 403, 404),
)
async def retry_delivery(
    workspace_id: str, webhook_id: str, delivery_id: str, caller: WorkspaceAdminDep, ctx: ContextDep
) -> Delivery:
    """Queue the delivery again now with a fresh attempt budget."""
    row = await ctx.webhooks.retry(caller, webhook_id, delivery_id)
    return Delivery.model_validate(row)
