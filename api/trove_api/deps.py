"""FastAPI dependencies: the app context, the authenticated caller, the namespace of a call.

They are ``async def`` even where nothing awaits: FastAPI runs a plain ``def`` dependency in its
thread pool, and each hop there and back cost an exec call ~0.2-0.5 ms on a busy two-core node.
Only the key lookup, which reads the database, goes to a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from trove_api.context import AppContext
from trove_api.services.auth import (
    Caller,
    authenticate,
    require_admin,
    require_filesystem,
    require_workspace,
    resolve_namespace,
)
from trove_core.names import NAMESPACE_PATTERN

# auto_error=False: a missing key is our own 401 problem, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="An API key: trove-sk-… or trove-sk-admin-…")


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_caller(
    request: Request,
    ctx: ContextDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return await authenticate(ctx.db, request.headers.get("authorization"))


CallerDep = Annotated[Caller, Depends(get_caller)]


@dataclass(frozen=True)
class FsCall:
    """A filesystem call: who, and which namespace (the header or the key's lock)."""

    caller: Caller
    namespace: str


async def get_fs_call(
    caller: CallerDep,
    x_namespace: Annotated[
        str | None,
        Header(
            description=f"Namespace to act on ({NAMESPACE_PATTERN}); optional for keys locked to a namespace."
        ),
    ] = None,
) -> FsCall:
    require_filesystem(caller)
    return FsCall(caller=caller, namespace=resolve_namespace(caller, x_namespace))


FsCallDep = Annotated[FsCall, Depends(get_fs_call)]


async def get_workspace_caller(workspace_id: str, caller: CallerDep) -> Caller:
    require_workspace(caller, workspace_id)
    return caller


WorkspaceCallerDep = Annotated[Caller, Depends(get_workspace_caller)]


async def get_workspace_admin(caller: WorkspaceCallerDep) -> Caller:
    require_admin(caller)
    return caller


WorkspaceAdminDep = Annotated[Caller, Depends(get_workspace_admin)]
