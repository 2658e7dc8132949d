"""Dashboard: webhooks (create, test, delivery log with every attempt, retry, rotate the secret,
delete), admin sign-ins only, through the same webhook service as the HTTP API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from trove_api.events.types import ALL_TYPES
from trove_api.routers.dashboard.common import AdminPostedDep, AdminViewDep, DashboardRoute, View, back
from trove_core.errors import WebhookNotFoundError

router = APIRouter(prefix="/dashboard/webhooks", route_class=DashboardRoute, include_in_schema=False)


@router.get("")
async def webhooks_page(view: AdminViewDep) -> Response:
    hooks = await view.ctx.webhooks.list(view.caller.workspace_id)
    return view.page("webhooks.html", nav="webhooks", hooks=hooks, created=None, all_types=ALL_TYPES)


@router.post("")
async def create(posted: AdminPostedDep) -> Response:
    """The signing secret is in this answer and nowhere else."""
    form, view = posted.form, posted.view
    chosen = [t for t in ALL_TYPES if form.get(f"type:{t}") == "on"]
    record, secret = await view.ctx.webhooks.create(
        posted.caller,
        url=form.get("url", "").strip(),
        events=chosen or None,
        namespace=form.get("namespace", "").strip() or None,
        description=form.get("description", "").strip() or None,
    )
    hooks = await view.ctx.webhooks.list(posted.caller.workspace_id)
    return view.page(
        "webhooks.html",
        nav="webhooks",
        hooks=hooks,
        created={"webhook": record, "secret": secret},
        all_types=ALL_TYPES,
    )


async def _webhook_page(view: View, webhook_id: str, **extra: Any) -> Response:
    hooks = await view.ctx.webhooks.list(view.caller.workspace_id)
    hook = next((h for h in hooks if h.webhook_id == webhook_id), None)
    if hook is None:
        raise WebhookNotFoundError(f"Webhook not found: {webhook_id}")
    deliveries = await view.ctx.webhooks.deliveries(view.caller, webhook_id, limit=50, status=None)
    values: dict[str, Any] = {
        "tested": None,
        "rotated": None,
        "done": view.request.query_params.get("done", ""),
    }
    values.update(extra)
    return view.page("webhook.html", nav="webhooks", hook=hook, deliveries=deliveries, **values)


@router.get("/{webhook_id}")
async def webhook_page(webhook_id: str, view: AdminViewDep) -> Response:
    return await _webhook_page(view, webhook_id)


@router.post("/{webhook_id}/test")
async def test(webhook_id: str, posted: AdminPostedDep) -> Response:
    result = await posted.view.ctx.webhooks.test(posted.caller, webhook_id)
    return await _webhook_page(posted.view, webhook_id, tested=result)


@router.post("/{webhook_id}/rotate")
async def rotate(webhook_id: str, posted: AdminPostedDep) -> Response:
    secret = await posted.view.ctx.webhooks.rotate_secret(posted.caller, webhook_id)
    return await _webhook_page(posted.view, webhook_id, rotated=secret)


@router.post("/{webhook_id}/delete")
async def delete(webhook_id: str, posted: AdminPostedDep) -> Response:
    await posted.view.ctx.webhooks.delete(posted.caller, webhook_id)
    return back("/dashboard/webhooks")


@router.get("/{webhook_id}/deliveries/{delivery_id}")
async def delivery_page(webhook_id: str, delivery_id: str, view: AdminViewDep) -> Response:
    detail = await view.ctx.webhooks.delivery(view.caller, webhook_id, delivery_id)
    return view.page("delivery.html", nav="webhooks", webhook_id=webhook_id, delivery=detail)


@router.post("/{webhook_id}/deliveries/{delivery_id}/retry")
async def retry(webhook_id: str, delivery_id: str, posted: AdminPostedDep) -> Response:
    await posted.view.ctx.webhooks.retry(posted.caller, webhook_id, delivery_id)
    return back(f"/dashboard/webhooks/{webhook_id}?done=retried")
