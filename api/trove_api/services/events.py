"""Emitting events from services: one short write transaction per event, after the change."""

from __future__ import annotations

import asyncio
from typing import Any

from trove_api.events.log import Actor, record
from trove_api.stores.db import Database


class EventEmitter:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def emit(
        self,
        *,
        workspace_id: str,
        namespace: str | None,
        type_: str,
        actor: Actor,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        return await asyncio.to_thread(
            self.emit_sync,
            workspace_id=workspace_id,
            namespace=namespace,
            type_=type_,
            actor=actor,
            data=data,
        )

    def emit_sync(
        self,
        *,
        workspace_id: str,
        namespace: str | None,
        type_: str,
        actor: Actor,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        with self.db.write() as conn:
            return record(
                conn,
                workspace_id=workspace_id,
                namespace=namespace,
                type_=type_,
                actor=actor,
                data=data,
            )
