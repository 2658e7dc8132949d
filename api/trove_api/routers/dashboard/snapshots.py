"""Dashboard: a namespace's snapshots (create, restore, delete, download) through the same
snapshot service as /v1/snapshots: the same locks, intents, events and audit actor."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from trove_api.routers.dashboard.common import DashboardRoute, PostedDep, ViewDep, back
from trove_api.routers.dashboard.namespaces import namespace_of, namespace_url
from trove_api.routers.snapshots import download_response

router = APIRouter(prefix="/dashboard/namespaces", route_class=DashboardRoute, include_in_schema=False)


@router.post("/{name}/snapshots")
async def create(name: str, posted: PostedDep) -> Response:
    namespace = namespace_of(posted.view, name)
    label = posted.form.get("label", "").strip() or None
    await posted.view.ctx.snapshots.create(posted.caller.workspace_id, namespace, label, posted.caller.actor)
    return back(namespace_url(namespace, done="snapshot-created") + "#snapshots")


@router.post("/{name}/snapshots/{snapshot_id}/restore")
async def restore(name: str, snapshot_id: str, posted: PostedDep) -> Response:
    namespace = namespace_of(posted.view, name)
    await posted.view.ctx.snapshots.restore(
        posted.caller.workspace_id, namespace, snapshot_id, posted.caller.actor
    )
    return back(namespace_url(namespace, done="snapshot-restored") + "#snapshots")


@router.post("/{name}/snapshots/{snapshot_id}/delete")
async def delete(name: str, snapshot_id: str, posted: PostedDep) -> Response:
    namespace = namespace_of(posted.view, name)
    await posted.view.ctx.snapshots.delete(
        posted.caller.workspace_id, namespace, snapshot_id, posted.caller.actor
    )
    return back(namespace_url(namespace, done="snapshot-deleted") + "#snapshots")


@router.get("/{name}/snapshots/{snapshot_id}/download")
async def download(name: str, snapshot_id: str, view: ViewDep) -> Response:
    namespace = namespace_of(view, name)
    snap, reader = await view.ctx.snapshots.open_download(view.caller.workspace_id, namespace, snapshot_id)
    return download_response(snap, reader, {"Cache-Control": "no-store"})
