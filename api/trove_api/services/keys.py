"""Keys and workspaces: mint (shown once), list, revoke; the first workspace at bootstrap."""

from __future__ import annotations

import asyncio
import builtins
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from trove_api.events import types
from trove_api.events.log import SYSTEM, Actor, record
from trove_api.services.auth import Caller, digest
from trove_api.stores.db import Database
from trove_api.stores.tables import api_keys, workspaces
from trove_core.clock import now_ts
from trove_core.errors import InvalidRequestError, KeyNotFoundError
from trove_core.names import (
    KEY_PREFIX,
    WORKSPACE_PREFIX,
    key_display_prefix,
    new_api_key,
    new_id,
    validate_namespace,
)


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    name: str
    prefix: str
    scope: str
    namespace: str | None
    created_at: str

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(
            key_id=row["id"],
            name=row["name"],
            prefix=row["prefix"],
            scope=row["scope"],
            namespace=row["namespace"],
            created_at=row["created_at"],
        )


@dataclass(frozen=True)
class MintedKey:
    record: KeyRecord
    api_key: str


@dataclass(frozen=True)
class NewWorkspace:
    workspace_id: str
    admin_key: MintedKey
    workspace_key: MintedKey | None


def new_key_id() -> str:
    return new_id(KEY_PREFIX)


def insert_key(
    conn: Connection,
    *,
    workspace_id: str,
    name: str,
    namespace: str | None,
    admin: bool,
    actor: Actor,
    plaintext: str | None = None,
    key_id: str | None = None,
) -> MintedKey:
    api_key = plaintext or new_api_key(admin=admin)
    rec = KeyRecord(
        key_id=key_id or new_key_id(),
        name=name,
        prefix=key_display_prefix(api_key),
        scope="admin" if admin else "workspace",
        namespace=namespace,
        created_at=now_ts(),
    )
    conn.execute(
        insert(api_keys).values(
            id=rec.key_id,
            workspace_id=workspace_id,
            name=rec.name,
            prefix=rec.prefix,
            digest=digest(api_key),
            scope=rec.scope,
            namespace=rec.namespace,
            created_at=rec.created_at,
        )
    )
    record(
        conn,
        workspace_id=workspace_id,
        namespace=namespace,
        type_=types.KEY_CREATED,
        actor=actor,
        data={"key_id": rec.key_id, "name": rec.name, "scope": rec.scope, "namespace": namespace},
    )
    return MintedKey(record=rec, api_key=api_key)


class KeyService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, caller: Caller, *, name: str, namespace: str | None, admin: bool) -> MintedKey:
        return await asyncio.to_thread(self._create, caller, name=name, namespace=namespace, admin=admin)

    def _create(self, caller: Caller, *, name: str, namespace: str | None, admin: bool) -> MintedKey:
        if admin and namespace is not None:
            raise InvalidRequestError("An admin key cannot be locked to a namespace")
        if namespace is not None:
            validate_namespace(namespace)
        with self.db.write() as conn:
            return insert_key(
                conn,
                workspace_id=caller.workspace_id,
                name=name,
                namespace=namespace,
                admin=admin,
                actor=caller.actor,
            )

    async def list(self, workspace_id: str) -> list[KeyRecord]:
        return await asyncio.to_thread(self._list, workspace_id)

    def _list(self, workspace_id: str) -> builtins.list[KeyRecord]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(api_keys)
                .where(api_keys.c.workspace_id == workspace_id, api_keys.c.revoked_at.is_(None))
                .order_by(api_keys.c.created_at, api_keys.c.id)
            ).mappings()
            return [KeyRecord.from_row(row) for row in rows]

    async def revoke(self, caller: Caller, key_id: str) -> None:
        await asyncio.to_thread(self._revoke, caller, key_id)

    def _revoke(self, caller: Caller, key_id: str) -> None:
        with self.db.write() as conn:
            result = conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.workspace_id == caller.workspace_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=now_ts())
            )
            if result.rowcount == 0:
                raise KeyNotFoundError(f"Key not found: {key_id}")
            record(
                conn,
                workspace_id=caller.workspace_id,
                namespace=None,
                type_=types.KEY_REVOKED,
                actor=caller.actor,
                data={"key_id": key_id},
            )


def create_workspace(
    db: Database, name: str, *, admin_plaintext: str | None = None, workspace_key: bool = True
) -> NewWorkspace:
    """A workspace with one admin key and (unless told not to) one unlocked workspace key."""
    workspace_id = new_id(WORKSPACE_PREFIX)
    with db.write() as conn:
        conn.execute(insert(workspaces).values(id=workspace_id, name=name, created_at=now_ts()))
        record(
            conn,
            workspace_id=workspace_id,
            namespace=None,
            type_=types.WORKSPACE_CREATED,
            actor=SYSTEM,
            data={"workspace_id": workspace_id, "name": name},
        )
        admin = insert_key(
            conn,
            workspace_id=workspace_id,
            name="admin",
            namespace=None,
            admin=True,
            actor=SYSTEM,
            plaintext=admin_plaintext,
        )
        workspace = (
            insert_key(
                conn,
                workspace_id=workspace_id,
                name="workspace",
                namespace=None,
                admin=False,
                actor=SYSTEM,
            )
            if workspace_key
            else None
        )
    return NewWorkspace(workspace_id=workspace_id, admin_key=admin, workspace_key=workspace)


def workspace_count(db: Database) -> int:
    with db.read() as conn:
        return len(conn.execute(select(workspaces.c.id)).all())
