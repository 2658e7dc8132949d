"""Snapshots: /v1/snapshots (create, list), /{id}/restore, DELETE /{id}, and our /{id}/download."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from trove_api.deps import ContextDep, FsCallDep
from trove_api.schemas.common import problems
from trove_api.schemas.snapshots import (
    Snapshot,
    SnapshotCreate,
    SnapshotDeleted,
    SnapshotList,
    SnapshotRestored,
)
from trove_api.services.snapshots import LIST_MAX_LIMIT, SnapshotRecord
from trove_api.stores.snapshots import SnapshotReader

router = APIRouter(prefix="/v1/snapshots", tags=["snapshots"])


def _wire(snap: SnapshotRecord) -> Snapshot:
    """The record's public fields (its workspace, kind and storage key stay inside)."""
    return Snapshot.model_validate(snap, from_attributes=True)


@router.post("", response_model=Snapshot, status_code=201, responses=problems(400, 401, 403, 422, 503, 507))
async def create_snapshot(body: SnapshotCreate, call: FsCallDep, ctx: ContextDep) -> Snapshot:
    """Tar the namespace (gzip) into the snapshot store. Execs and writes wait while it runs."""
    snap = await ctx.snapshots.create(call.caller.workspace_id, call.namespace, body.label, call.caller.actor)
    return _wire(snap)


@router.get("", response_model=SnapshotList, responses=problems(400, 401, 403, 422))
async def list_snapshots(
    call: FsCallDep,
    ctx: ContextDep,
    limit: Annotated[
        int | None, Query(ge=1, le=LIST_MAX_LIMIT, description="Page size; omit for the complete list.")
    ] = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> SnapshotList:
    """The namespace's snapshots, newest first (complete unless `limit` is given)."""
    items, next_cursor = await ctx.snapshots.listing(
        call.caller.workspace_id, call.namespace, limit=limit, cursor=cursor
    )
    return SnapshotList(snapshots=[_wire(s) for s in items], next_cursor=next_cursor)


@router.post(
    "/{snapshot_id}/restore",
    response_model=SnapshotRestored,
    responses=problems(400, 401, 403, 404, 422, 503, 507),
)
async def restore_snapshot(snapshot_id: str, call: FsCallDep, ctx: ContextDep) -> SnapshotRestored:
    """Replace the namespace's contents with the snapshot, all or nothing (no body needed).

    The tarball is checked (checksum, and every member must stay inside the namespace) and
    extracted beside the namespace, then swapped in; on any failure nothing changes.
    """
    return await ctx.snapshots.restore(
        call.caller.workspace_id, call.namespace, snapshot_id, call.caller.actor
    )


@router.delete("/{snapshot_id}", response_model=SnapshotDeleted, responses=problems(400, 401, 403, 404, 503))
async def delete_snapshot(snapshot_id: str, call: FsCallDep, ctx: ContextDep) -> SnapshotDeleted:
    """Delete the snapshot and its tarball."""
    await ctx.snapshots.delete(call.caller.workspace_id, call.namespace, snapshot_id, call.caller.actor)
    return SnapshotDeleted(snapshot_id=snapshot_id)


@router.get(
    "/{snapshot_id}/download",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/gzip": {}}, "description": "The gzip tarball."},
        **problems(400, 401, 403, 404, 503),
    },
)
async def download_snapshot(snapshot_id: str, call: FsCallDep, ctx: ContextDep) -> StreamingResponse:
    """The snapshot's gzip tarball, streamed from the store (`X-Trove-Checksum`: its sha256)."""
    snap, reader = await ctx.snapshots.open_download(call.caller.workspace_id, call.namespace, snapshot_id)
    return download_response(snap, reader)


def download_response(
    snap: SnapshotRecord, reader: SnapshotReader, extra_headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    """A snapshot's tarball as an attachment, streamed, its sha256 in ``X-Trove-Checksum``."""
    return StreamingResponse(
        reader.chunks(),
        media_type="application/gzip",
        headers={
            "Content-Length": str(reader.size),
            "Content-Disposition": f'attachment; filename="{snap.snapshot_id}.tar.gz"',
            "X-Trove-Checksum": snap.checksum,
            **(extra_headers or {}),
        },
        background=BackgroundTask(reader.aclose),
    )
