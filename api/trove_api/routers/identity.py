"""GET /v1/me and the keys of a workspace."""

from __future__ import annotations

from fastapi import APIRouter, status

from trove_api.deps import CallerDep, ContextDep, WorkspaceAdminDep, WorkspaceCallerDep
from trove_api.schemas.common import problems
from trove_api.schemas.identity import (
    KeyCreated,
    KeyCreateRequest,
    KeyList,
    KeyMetadata,
    KeyRevoked,
    Me,
)
from trove_api.services.keys import KeyRecord
from trove_core.errors import NamespaceForbiddenError

router = APIRouter(tags=["identity"])


@router.get("/v1/me", response_model=Me, responses=problems(401))
async def whoami(caller: CallerDep) -> Me:
    """The workspace, key and scope behind the bearer key (works for admin keys too)."""
    return Me(
        workspace_id=caller.workspace_id,
        key_id=caller.key_id,
        key_name=caller.key_name,
        scope=caller.scope,
        namespace=caller.namespace,
    )


def _metadata(rec: KeyRecord) -> KeyMetadata:
    return KeyMetadata(
        key_id=rec.key_id,
        name=rec.name,
        prefix=rec.prefix,
        scope="admin" if rec.scope == "admin" else "workspace",
        namespace=rec.namespace,
        created_at=rec.created_at,
    )


@router.post(
    "/v1/workspaces/{workspace_id}/keys",
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problems(401, 403, 422),
)
async def create_key(
    workspace_id: str, body: KeyCreateRequest, caller: WorkspaceAdminDep, ctx: ContextDep
) -> KeyCreated:
    """Mint a key (admin only). The plaintext `api_key` is in this response and nowhere else."""
    minted = await ctx.keys.create(caller, name=body.name, namespace=body.namespace, admin=body.admin)
    return KeyCreated(**_metadata(minted.record).model_dump(), api_key=minted.api_key)


@router.get("/v1/workspaces/{workspace_id}/keys", response_model=KeyList, responses=problems(401, 403))
async def list_keys(workspace_id: str, caller: WorkspaceCallerDep, ctx: ContextDep) -> KeyList:
    """Active keys (admin keys, and workspace keys not locked to a namespace)."""
    if caller.namespace is not None:
        raise NamespaceForbiddenError("Keys locked to a namespace cannot list the workspace's keys")
    records = await ctx.keys.list(workspace_id)
    return KeyList(keys=[_metadata(r) for r in records])


@router.delete(
    "/v1/workspaces/{workspace_id}/keys/{key_id}",
    response_model=KeyRevoked,
    responses=problems(401, 403, 404),
)
async def revoke_key(
    workspace_id: str, key_id: str, caller: WorkspaceAdminDep, ctx: ContextDep
) -> KeyRevoked:
    """Revoke a key; its very next request gets 401."""
    await ctx.keys.revoke(caller, key_id)
    return KeyRevoked(key_id=key_id, revoked=True)
