"""The event log: ``record`` appends one event inside the caller's transaction."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select

from trove_api.stores.advisory import EVENTS, lock_key, xact_lock
from trove_api.stores.db import flag_commit
from trove_api.stores.tables import events, webhook_deliveries, webhooks
from trove_core.clock import next_after, now_ts
from trove_core.names import DELIVERY_PREFIX, EVENT_PREFIX, new_id
from trove_core.wire import API_VERSION


@dataclass(frozen=True)
class Actor:
    key_id: str | None
    key_name: str | None


SYSTEM = Actor(key_id=None, key_name="system")
# Commit topics (``Database.listen``): the event hub wakes on the first, the dispatcher on the second.
EVENTS_TOPIC = "events"
DELIVERIES_TOPIC = "webhook_deliveries"

# Built once: every exec and file write records an event, and building a statement (coercing
# its clauses, computing its cache key) cost more than running it on SQLite.
_LATEST_CREATED_AT = select(func.max(events.c.created_at)).where(
    events.c.workspace_id == bindparam("workspace_id")
)
_INSERT_EVENT = insert(events)
_LIVE_HOOKS = select(webhooks.c.id, webhooks.c.events, webhooks.c.namespace).where(
    webhooks.c.workspace_id == bindparam("workspace_id"),
    webhooks.c.deleted_at.is_(None),
    webhooks.c.enabled.is_(True),
)
_INSERT_DELIVERIES = insert(webhook_deliveries)


def record(
    conn: Connection,
    *,
    workspace_id: str,
    namespace: str | None,
    type_: str,
    actor: Actor,
    data: dict[str, Any],
    fan_out: bool = True,
) -> dict[str, Any]:
    """Insert one event, queue its webhook deliveries, and return its envelope.

    ``created_at`` is strictly increasing per workspace (clients use it as an exclusive
    cursor); ``Database.write`` serialises writers, so reading the latest and inserting after
    it cannot interleave with another writer. On PostgreSQL other replicas write too, so a
    per-workspace advisory lock, held until commit, is taken before reading the latest: per
    workspace, events then commit in ``created_at`` and ``seq`` order, and a reader that saw
    an event never later finds an older one appear. The deliveries are rows in the same
    transaction, so an event that commits is delivered at least once and one that rolls back
    never is. ``fan_out=False`` is for ``webhook.test``, which goes to one hook directly.
    """
    xact_lock(conn, lock_key(EVENTS, workspace_id))
    latest = conn.execute(_LATEST_CREATED_AT, {"workspace_id": workspace_id}).scalar_one_or_none()
    created_at = now_ts() if latest is None else next_after(latest, now_ts())
    event_id = new_id(EVENT_PREFIX, 24)
    conn.execute(
        _INSERT_EVENT,
        {
            "id": event_id,
            "workspace_id": workspace_id,
            "namespace": namespace,
            "type": type_,
            "created_at": created_at,
            "actor_key_id": actor.key_id,
            "actor_key_name": actor.key_name,
            "data": json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        },
    )
    flag_commit(conn, EVENTS_TOPIC)
    if fan_out and enqueue_deliveries(
        conn, workspace_id=workspace_id, namespace=namespace, type_=type_, event_id=event_id
    ):
        flag_commit(conn, DELIVERIES_TOPIC)
    return envelope(
        event_id=event_id,
        type_=type_,
        workspace_id=workspace_id,
        namespace=namespace,
        created_at=created_at,
        actor=actor,
        data=data,
    )


def hook_matches(
    hook_events: list[str], hook_namespace: str | None, type_: str, namespace: str | None
) -> bool:
    """A hook takes an event when it names its type (or ``*``) and, if filtered, its namespace."""
    if hook_namespace is not None and hook_namespace != namespace:
        return False
    return "*" in hook_events or type_ in hook_events


def enqueue_deliveries(
    conn: Connection, *, workspace_id: str, namespace: str | None, type_: str, event_id: str
) -> int:
    """Queue one pending delivery per matching live webhook; returns how many."""
    hooks = conn.execute(_LIVE_HOOKS, {"workspace_id": workspace_id}).all()
    rows = [
        new_delivery_row(webhook_id=hook.id, event_id=event_id, workspace_id=workspace_id)
        for hook in hooks
        if hook_matches(json.loads(hook.events), hook.namespace, type_, namespace)
    ]
    if rows:
        conn.execute(_INSERT_DELIVERIES, rows)
    return len(rows)


def new_delivery_row(
    *, webhook_id: str, event_id: str, workspace_id: str, claimed_until: float | None = None
) -> dict[str, Any]:
    stamp = now_ts()
    return {
        "id": new_id(DELIVERY_PREFIX, 24),
        "webhook_id": webhook_id,
        "event_id": event_id,
        "workspace_id": workspace_id,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": time.time(),
        "claimed_until": claimed_until,
        "last_status_code": None,
        "last_error": None,
        "created_at": stamp,
        "updated_at": stamp,
    }


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


def envelope_from_row(row: Any) -> dict[str, Any]:
    """The envelope of a stored ``events`` row."""
    return envelope(
        event_id=row["id"],
        type_=row["type"],
        workspace_id=row["workspace_id"],
        namespace=row["namespace"],
        created_at=row["created_at"],
        actor=Actor(key_id=row["actor_key_id"], key_name=row["actor_key_name"]),
        data=json.loads(row["data"]),
    )
