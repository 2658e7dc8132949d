"""Webhooks: create (secret shown once), list, delete, test, the deliveries log, retry, rotate."""

from __future__ import annotations

import asyncio
import builtins
import json
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from trove_api.events import types
from trove_api.events.dispatcher import Dispatcher
from trove_api.events.log import DELIVERIES_TOPIC, new_delivery_row, record
from trove_api.events.signing import new_secret
from trove_api.events.targets import TargetRefused, check_url
from trove_api.schemas.webhooks import WebhookMetadata, WebhookTestResult
from trove_api.services.auth import Caller
from trove_api.stores.db import Database, flag_commit
from trove_api.stores.tables import events, webhook_attempts, webhook_deliveries, webhooks
from trove_core.clock import format_ts, now_ts
from trove_core.errors import DeliveryNotFoundError, InvalidRequestError, WebhookNotFoundError
from trove_core.names import WEBHOOK_PREFIX, new_id, validate_namespace

KNOWN_EVENTS = frozenset(types.ALL_TYPES)
TEST_MESSAGE = "This is a test event from Trove."


def metadata_from_row(row: Any) -> WebhookMetadata:
    """A stored ``webhooks`` row as the wire shows it (the secret never leaves the row)."""
    return WebhookMetadata(
        webhook_id=row["id"],
        url=row["url"],
        events=json.loads(row["events"]),
        namespace=row["namespace"],
        description=row["description"],
        enabled=bool(row["enabled"]),
        created_at=row["created_at"],
        last_delivery_at=row["last_delivery_at"],
        last_delivery_ok=row["last_delivery_ok"],
        last_delivery_status=row["last_delivery_status"],
    )


def normalize_events(requested: list[str] | None) -> list[str]:
    """Known types (deduplicated, in order) or ``["*"]``; anything else is a 422."""
    names = [name.strip() for name in requested or [] if name.strip()]
    if not names or "*" in names:
        return ["*"]
    unknown = [name for name in names if name not in KNOWN_EVENTS]
    if unknown:
        raise InvalidRequestError(
            f"Unknown event type(s): {', '.join(sorted(set(unknown)))[:300]}. "
            f"Known: {', '.join(types.ALL_TYPES)}, or * for all"
        )
    return list(dict.fromkeys(names))


class WebhookService:
    def __init__(self, db: Database, dispatcher: Dispatcher) -> None:
        self.db = db
        self.dispatcher = dispatcher

    async def create(
        self,
        caller: Caller,
        *,
        url: str,
        events: list[str] | None,
        namespace: str | None,
        description: str | None,
    ) -> tuple[WebhookMetadata, str]:
        return await asyncio.to_thread(
            self._create, caller, url=url, events=events, namespace=namespace, description=description
        )

    def _create(
        self,
        caller: Caller,
        *,
        url: str,
        events: list[str] | None,
        namespace: str | None,
        description: str | None,
    ) -> tuple[WebhookMetadata, str]:
        try:
            check_url(url)
        except TargetRefused as exc:
            raise InvalidRequestError(str(exc)) from exc
        if namespace is not None:
            validate_namespace(namespace)
        chosen = normalize_events(events)
        secret = new_secret()
        values = {
            "id": new_id(WEBHOOK_PREFIX),
            "workspace_id": caller.workspace_id,
            "url": url,
            "events": json.dumps(chosen),
            "namespace": namespace,
            "description": description,
            "secret": secret,
            "enabled": True,
            "created_at": now_ts(),
        }
        with self.db.write() as conn:
            conn.execute(insert(webhooks).values(**values))
            row = self._row(conn, caller.workspace_id, str(values["id"]))
        return metadata_from_row(row), secret

    async def list(self, workspace_id: str) -> list[WebhookMetadata]:
        return await asyncio.to_thread(self._list, workspace_id)

    def _list(self, workspace_id: str) -> builtins.list[WebhookMetadata]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(webhooks)
                .where(webhooks.c.workspace_id == workspace_id, webhooks.c.deleted_at.is_(None))
                .order_by(webhooks.c.created_at, webhooks.c.id)
            ).mappings()
            return [metadata_from_row(row) for row in rows]

    async def delete(self, caller: Caller, webhook_id: str) -> None:
        """Soft delete (deliveries keep their history); queued deliveries are dropped."""
        await asyncio.to_thread(self._delete, caller, webhook_id)

    def _delete(self, caller: Caller, webhook_id: str) -> None:
        stamp = now_ts()
        with self.db.write() as conn:
            self._row(conn, caller.workspace_id, webhook_id)
            conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(deleted_at=stamp))
            conn.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.webhook_id == webhook_id, webhook_deliveries.c.status == "pending"
                )
                .values(status="failed", last_error="webhook deleted", updated_at=stamp)
            )

    async def rotate_secret(self, caller: Caller, webhook_id: str) -> str:
        """A new signing secret (shown once); the old one stops signing at once."""
        return await asyncio.to_thread(self._rotate_secret, caller, webhook_id)

    def _rotate_secret(self, caller: Caller, webhook_id: str) -> str:
        secret = new_secret()
        with self.db.write() as conn:
            self._row(conn, caller.workspace_id, webhook_id)
            conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(secret=secret))
        return secret

    async def test(self, caller: Caller, webhook_id: str) -> WebhookTestResult:
        """Record a ``webhook.test`` event and deliver it to this hook alone, synchronously."""
        delivery_id, event_id = await asyncio.to_thread(self._queue_test, caller, webhook_id)
        outcome = await self.dispatcher.deliver_now(delivery_id)
        return WebhookTestResult(
            ok=outcome.ok, event_id=event_id, status=outcome.status_code, error=outcome.error
        )

    def _queue_test(self, caller: Caller, webhook_id: str) -> tuple[str, str]:
        with self.db.write() as conn:
            hook = self._row(conn, caller.workspace_id, webhook_id)
            event = record(
                conn,
                workspace_id=caller.workspace_id,
                namespace=hook["namespace"],
                type_=types.WEBHOOK_TEST,
                actor=caller.actor,
                data={"message": TEST_MESSAGE, "webhook_id": webhook_id},
                fan_out=False,
            )
            # Leased by us, so the background worker leaves it to this request.
            row = new_delivery_row(
                webhook_id=webhook_id,
                event_id=event["id"],
                workspace_id=caller.workspace_id,
                claimed_until=time.time() + self.dispatcher.lease_s,
            )
            conn.execute(insert(webhook_deliveries).values(**row))
        return str(row["id"]), str(event["id"])

    # -- the deliveries log ------------------------------------------------------------------

    async def deliveries(
        self, caller: Caller, webhook_id: str, *, limit: int, status: str | None
    ) -> builtins.list[dict[str, Any]]:
        return await asyncio.to_thread(self._deliveries, caller, webhook_id, limit=limit, status=status)

    def _deliveries(
        self, caller: Caller, webhook_id: str, *, limit: int, status: str | None
    ) -> builtins.list[dict[str, Any]]:
        with self.db.read() as conn:
            self._row(conn, caller.workspace_id, webhook_id, include_deleted=True)
            query = (
                select(webhook_deliveries, events.c.type.label("event_type"))
                .join(events, events.c.id == webhook_deliveries.c.event_id, isouter=True)
                .where(webhook_deliveries.c.webhook_id == webhook_id)
                .order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id.desc())
                .limit(max(1, min(500, limit)))
            )
            if status:
                query = query.where(webhook_deliveries.c.status == status)
            return [_delivery(row) for row in conn.execute(query).mappings()]

    async def delivery(self, caller: Caller, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self._delivery, caller, webhook_id, delivery_id)

    def _delivery(self, caller: Caller, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        with self.db.read() as conn:
            found = self._delivery_row(conn, caller, webhook_id, delivery_id)
            attempts = conn.execute(
                select(webhook_attempts)
                .where(webhook_attempts.c.delivery_id == delivery_id)
                .order_by(webhook_attempts.c.attempt)
            ).mappings()
            detail = _delivery(found)
            detail["attempt_log"] = [
                {
                    "attempt": a["attempt"],
                    "started_at": a["started_at"],
                    "duration_ms": a["duration_ms"],
                    "status_code": a["status_code"],
                    "error": a["error"],
                    "response_excerpt": a["response_excerpt"],
                }
                for a in attempts
            ]
            return detail

    async def retry(self, caller: Caller, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        """Queue a delivery again now, with a fresh attempt budget (delivered ones are re-sent)."""
        return await asyncio.to_thread(self._retry, caller, webhook_id, delivery_id)

    def _retry(self, caller: Caller, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        with self.db.write() as conn:
            self._delivery_row(conn, caller, webhook_id, delivery_id)
            self._row(conn, caller.workspace_id, webhook_id)  # a deleted hook cannot be retried
            conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery_id)
                .values(
                    status="pending",
                    attempts=0,
                    next_attempt_at=time.time(),
                    claimed_until=None,
                    updated_at=now_ts(),
                )
            )
            flag_commit(conn, DELIVERIES_TOPIC)
            return _delivery(self._delivery_row(conn, caller, webhook_id, delivery_id))

    # -- rows --------------------------------------------------------------------------------

    def _row(
        self, conn: Connection, workspace_id: str, webhook_id: str, *, include_deleted: bool = False
    ) -> Any:
        query = select(webhooks).where(webhooks.c.id == webhook_id, webhooks.c.workspace_id == workspace_id)
        if not include_deleted:
            query = query.where(webhooks.c.deleted_at.is_(None))
        row = conn.execute(query).mappings().first()
        if row is None:
            raise WebhookNotFoundError(f"Webhook not found: {webhook_id[:80]}")
        return row

    def _delivery_row(self, conn: Connection, caller: Caller, webhook_id: str, delivery_id: str) -> Any:
        self._row(conn, caller.workspace_id, webhook_id, include_deleted=True)
        row = (
            conn.execute(
                select(webhook_deliveries, events.c.type.label("event_type"))
                .join(events, events.c.id == webhook_deliveries.c.event_id, isouter=True)
                .where(
                    webhook_deliveries.c.id == delivery_id,
                    webhook_deliveries.c.webhook_id == webhook_id,
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise DeliveryNotFoundError(f"Delivery not found: {delivery_id[:80]}")
        return row


def _delivery(row: Any) -> dict[str, Any]:
    pending = row["status"] == "pending"
    return {
        "delivery_id": row["id"],
        "webhook_id": row["webhook_id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": _stamp(row["next_attempt_at"]) if pending else None,
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _stamp(epoch: float) -> str:
    return format_ts(datetime.fromtimestamp(epoch, UTC))
