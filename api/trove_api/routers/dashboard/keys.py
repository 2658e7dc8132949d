"""Dashboard: the workspace's keys (mint, shown once; list; revoke), admin sign-ins only,
through the same key service as /v1/workspaces/{ws}/keys (events and audit actor included)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from trove_api.routers.dashboard.common import AdminPostedDep, AdminViewDep, DashboardRoute, back

router = APIRouter(prefix="/dashboard/keys", route_class=DashboardRoute, include_in_schema=False)


@router.get("")
async def keys_page(view: AdminViewDep) -> Response:
    keys = await view.ctx.keys.list(view.caller.workspace_id)
    done = view.request.query_params.get("done", "")
    return view.page("keys.html", nav="keys", keys=keys, minted=None, done=done)


@router.post("")
async def mint(posted: AdminPostedDep) -> Response:
    """The new key is in this answer and nowhere else (no redirect: a reload would not show it)."""
    form, view = posted.form, posted.view
    minted = await view.ctx.keys.create(
        posted.caller,
        name=form.get("name", "").strip() or "dashboard",
        namespace=form.get("namespace", "").strip() or None,
        admin=form.get("admin") == "on",
    )
    keys = await view.ctx.keys.list(posted.caller.workspace_id)
    return view.page("keys.html", nav="keys", keys=keys, minted=minted, done="")


@router.post("/{key_id}/revoke")
async def revoke(key_id: str, posted: AdminPostedDep) -> Response:
    await posted.view.ctx.keys.revoke(posted.caller, key_id)
    return back("/dashboard/keys?done=revoked")
