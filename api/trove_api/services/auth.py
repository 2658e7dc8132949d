"""API keys: hashing, verification and the scope / namespace-lock rules (no web framework here)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import RowMapping, bindparam, select

from trove_api.events.log import Actor
from trove_api.stores.db import Database
from trove_api.stores.tables import api_keys
from trove_core.errors import (
    AdminKeyOnFilesystemError,
    AdminRequiredError,
    NamespaceForbiddenError,
    NamespaceRequiredError,
    UnauthenticatedError,
    WorkspaceForbiddenError,
)
from trove_core.names import WORKSPACE_KEY_PREFIX, validate_namespace

Scope = Literal["admin", "workspace"]
# Built once: every request looks its key up (see ``events.log`` for why that matters).
_KEY_BY_DIGEST = select(api_keys).where(api_keys.c.digest == bindparam("digest"))


@dataclass(frozen=True)
class Caller:
    key_id: str
    key_name: str
    workspace_id: str
    scope: Scope
    namespace: str | None

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    @property
    def actor(self) -> Actor:
        return Actor(key_id=self.key_id, key_name=self.key_name)


def digest(api_key: str) -> str:
    """SHA-256 of the key. Keys carry 256 random bits, so a slow KDF would add nothing."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise UnauthenticatedError("Missing Authorization header: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("Malformed Authorization header: expected 'Bearer <key>'")
    return token.strip()


async def authenticate(db: Database, authorization: str | None) -> Caller:
    """The caller behind a key. Looked up on every request: a revocation takes effect at once."""
    return await asyncio.to_thread(_lookup_caller, db, authorization)


def _lookup_caller(db: Database, authorization: str | None) -> Caller:
    token = bearer_token(authorization)
    if not token.startswith(WORKSPACE_KEY_PREFIX) or len(token) > 256:
        raise UnauthenticatedError("Invalid API key")
    wanted = digest(token)
    with db.single() as conn:
        row = conn.execute(_KEY_BY_DIGEST, {"digest": wanted}).mappings().first()
    if row is None or not hmac.compare_digest(row["digest"], wanted):
        raise UnauthenticatedError("Invalid API key")
    if row["revoked_at"] is not None:
        raise UnauthenticatedError("This API key has been revoked")
    return caller_of(row)


def caller_of(key_row: RowMapping) -> Caller:
    """The caller an ``api_keys`` row stands for."""
    return Caller(
        key_id=key_row["id"],
        key_name=key_row["name"],
        workspace_id=key_row["workspace_id"],
        scope=key_row["scope"],
        namespace=key_row["namespace"],
    )


def key_is_active(db: Database, key_id: str) -> bool:
    """Whether a key (looked up by id) still exists unrevoked: long streams re-check it."""
    with db.read() as conn:
        revoked = conn.execute(select(api_keys.c.revoked_at).where(api_keys.c.id == key_id)).first()
    return revoked is not None and revoked[0] is None


def require_filesystem(caller: Caller) -> None:
    if caller.is_admin:
        raise AdminKeyOnFilesystemError(
            "Admin keys manage keys and webhooks; they cannot touch the filesystem. Use a workspace key."
        )


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise AdminRequiredError(
            "This operation needs an admin key; workspace keys cannot manage keys or webhooks."
        )


def require_workspace(caller: Caller, workspace_id: str) -> None:
    if caller.workspace_id != workspace_id:
        raise WorkspaceForbiddenError(
            f"This key belongs to workspace {caller.workspace_id}, not {workspace_id}"
        )


def resolve_namespace(caller: Caller, header: str | None) -> str:
    """The namespace a filesystem call acts on: the header, or the key's lock."""
    requested = (header or "").strip() or None
    if caller.namespace is not None:
        if requested is not None and requested != caller.namespace:
            raise NamespaceForbiddenError(
                f"This key is locked to namespace {caller.namespace!r}; it cannot access {requested[:140]!r}"
            )
        return caller.namespace
    if requested is None:
        raise NamespaceRequiredError("Missing X-Namespace header: name the namespace to act on")
    return validate_namespace(requested)
