"""Intents: a change's event, written down before the change, so a crash cannot lose it.

A change (file write, delete, exec, restore, snapshot create or delete) and its event cannot
share a transaction: the change is on a filesystem or an object store. So the service first
commits an intent row (the event it will emit and what would prove the change happened),
then makes the change, then writes the event and deletes the intent in one transaction.
A crash anywhere leaves the intent behind; ``services.recovery`` resolves it at the next
start: if the change happened its event is emitted, otherwise what is half-done is undone.
Either way the row goes, in the transaction that writes the event (if any).

An intent belongs to the process that made it (``owner``). Its own in-flight intents are
never resolved by anyone else: on SQLite there is one process, on PostgreSQL each process
holds a session advisory lock on its owner key for its whole life (``hold_ownership``), and
recovery only takes intents whose owner's lock it can take itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert

from trove_api.events.log import Actor, record
from trove_api.stores.advisory import INTENTS, lock_key
from trove_api.stores.db import Database
from trove_api.stores.tables import intents
from trove_core.names import new_id

FILE_WRITE = "file.write"
FILE_DELETE = "file.delete"
EXEC = "exec"
SNAPSHOT_CREATE = "snapshot.create"
SNAPSHOT_RESTORE = "snapshot.restore"
SNAPSHOT_DELETE = "snapshot.delete"


@dataclass(frozen=True)
class Intent:
    intent_id: str
    owner: str
    workspace_id: str
    namespace: str
    kind: str
    actor: Actor
    payload: dict[str, Any]
    created_at: float


def intent_from_row(row: Any) -> Intent:
    return Intent(
        intent_id=row["id"],
        owner=row["owner"],
        workspace_id=row["workspace_id"],
        namespace=row["namespace"],
        kind=row["kind"],
        actor=Actor(key_id=row["actor_key_id"], key_name=row["actor_key_name"]),
        payload=json.loads(row["payload"]),
        created_at=float(row["created_at"]),
    )


class IntentLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.owner = new_id("proc", 24)
        # This process's intents whose change is still running: recovery leaves them alone.
        self.in_flight: set[str] = set()

    async def begin(
        self, workspace_id: str, namespace: str, kind: str, actor: Actor, payload: dict[str, Any]
    ) -> Intent:
        intent = Intent(
            intent_id=new_id("int", 24),
            owner=self.owner,
            workspace_id=workspace_id,
            namespace=namespace,
            kind=kind,
            actor=actor,
            payload=payload,
            created_at=time.time(),
        )
        self.in_flight.add(intent.intent_id)
        try:
            await asyncio.to_thread(self._insert, intent)
        except BaseException:
            self.in_flight.discard(intent.intent_id)
            raise
        return intent

    def _insert(self, intent: Intent) -> None:
        with self.db.write() as conn:
            conn.execute(
                insert(intents).values(
                    id=intent.intent_id,
                    owner=intent.owner,
                    workspace_id=intent.workspace_id,
                    namespace=intent.namespace,
                    kind=intent.kind,
                    actor_key_id=intent.actor.key_id,
                    actor_key_name=intent.actor.key_name,
                    payload=json.dumps(intent.payload, separators=(",", ":"), ensure_ascii=False),
                    created_at=intent.created_at,
                )
            )

    async def complete(self, intent: Intent, type_: str, data: dict[str, Any]) -> None:
        """The change happened: its event and the intent's end, in one transaction."""
        try:
            await asyncio.to_thread(self.complete_sync, intent, type_, data)
        finally:
            self.in_flight.discard(intent.intent_id)

    def complete_sync(self, intent: Intent, type_: str, data: dict[str, Any]) -> None:
        with self.db.write() as conn:
            emit_and_close(conn, intent, type_, data)

    async def abandon(self, intent: Intent) -> None:
        """The change did not happen (the runtime said so): drop the intent, no event."""
        try:
            await asyncio.to_thread(self.drop_sync, intent)
        finally:
            self.in_flight.discard(intent.intent_id)

    def drop_sync(self, intent: Intent) -> None:
        with self.db.write() as conn:
            conn.execute(delete(intents).where(intents.c.id == intent.intent_id))

    @asynccontextmanager
    async def around(self, intent: Intent) -> AsyncIterator[None]:
        """Run the change: an error the change reports drops the intent (nothing happened);
        a cancellation (the client went away mid-call) leaves it to recovery, which checks."""
        try:
            yield
        except Exception:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.abandon(intent))
            raise
        except BaseException:
            self.in_flight.discard(intent.intent_id)
            raise

    def ownership_key(self, owner: str | None = None) -> int:
        return lock_key(INTENTS, owner or self.owner)


def emit_and_close(conn: Any, intent: Intent, type_: str | None, data: dict[str, Any]) -> bool:
    """Delete the intent and, if this transaction is the one that did, record its event.

    Returns whether it was still open (a second resolver finds it gone and emits nothing,
    so an intent yields one event at most).
    """
    gone = conn.execute(delete(intents).where(intents.c.id == intent.intent_id)).rowcount
    if not gone:
        return False
    if type_ is not None:
        record(
            conn,
            workspace_id=intent.workspace_id,
            namespace=intent.namespace,
            type_=type_,
            actor=intent.actor,
            data=data,
        )
    return True
