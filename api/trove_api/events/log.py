"""The event log: ``record`` appends one event inside the caller's transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select

from trove_api.stores.tables import events
from trove_core.clock import next_after, now_ts
from trove_core.names import EVENT_PREFIX, new_id
from trove_core.wire import API_VERSION


@dataclass(frozen=True)
class Actor:
    key_id: str | None
    key_name: str | None


SYSTEM = Actor(key_id=None, key_name="system")


def record(
    conn: Connection,
    *,
    workspace_id: str,
    namespace: str | None,
    type_: str,
    actor: Actor,
    data: dict[str, Any],
) -> dict[str, Any]:
    """Insert one event and return its envelope.

    ``created_at`` is strictly increasing per workspace (clients use it as an exclusive
    cursor); ``Database.write`` serialises writers, so reading the latest and inserting after
    it cannot interleave with another writer.
    """
    latest = conn.execute(
        select(func.max(events.c.created_at)).where(events.c.workspace_id == workspace_id)
    ).scalar_one_or_none()
    created_at = now_ts() if latest is None else next_after(latest, now_ts())
    event_id = new_id(EVENT_PREFIX, 24)
    conn.execute(
        insert(events).values(
            id=event_id,
            workspace_id=workspace_id,
            namespace=namespace,
            type=type_,
            created_at=created_at,
            actor_key_id=actor.key_id,
            actor_key_name=actor.key_name,
            data=json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        )
    )
    return envelope(
        event_id=event_id,
        type_=type_,
        workspace_id=workspace_id,
        namespace=namespace,
        created_at=created_at,
        actor=actor,
        data=data,
    )


def envelope(
    *,
    event_id: str,
    type_: str,
    workspace_id: str,
    namespace: str | None,
    created_at: str,
    actor: Actor,
    data: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": type_,
        "api_version": API_VERSION,
        "workspace_id": workspace_id,
        "namespace": namespace,
        "created_at": created_at,
        "actor": {"key_id": actor.key_id, "key_name": actor.key_name},
        "data": data,
    }
