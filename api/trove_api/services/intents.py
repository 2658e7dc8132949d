"""Intents: a change's event, written down before the change, so a crash cannot lose it.

A change (file write, delete, exec, restore, snapshot create or delete) and its event cannot
share a transaction: the change is on a filesystem or an object store. So the service first
commits an intent row (the event it will emit and what would prove the change happened),
then makes the change, then writes the event and deletes the intent in one transaction.
A crash anywhere leaves the intent behind; ``services.recovery`` resolves it at the next
start: if the change happened its event is emitted, otherwise what is half-done is undone.
Either way the row goes, in the transaction that writes the event (if any).

An intent belongs to the process that made it (``owner``), which from its first intent on
holds a lock on its owner name for the rest of its life: a session advisory lock on
PostgreSQL, an ``flock`` on a file beside the SQLite database (a ``trove-server snapshots``
command may run beside the server). Recovery takes another owner's intents only if it can
take that lock itself: the owner is dead, and while recovery holds it no other process
recovers the same intents.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, insert

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

# Built once: every exec and file write begins and closes an intent, and building these
# statements per call (coercing nine values, computing cache keys) cost more CPU than running
# them on SQLite (~0.5 ms of an exec's ~3 ms API work, profiled with yappi).
_INSERT_INTENT = insert(intents)
_DELETE_INTENT = delete(intents).where(intents.c.id == bindparam("intent_id"))


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
        self._owning = asyncio.Lock()
        self._owned = contextlib.AsyncExitStack()
        self._owns = False

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
            await self._own()
            await asyncio.to_thread(self._insert, intent)
        except BaseException:
            self.in_flight.discard(intent.intent_id)
            raise
        return intent

    def _insert(self, intent: Intent) -> None:
        with self.db.single(write=True) as conn:
            conn.execute(
                _INSERT_INTENT,
                {
                    "id": intent.intent_id,
                    "owner": intent.owner,
                    "workspace_id": intent.workspace_id,
                    "namespace": intent.namespace,
                    "kind": intent.kind,
                    "actor_key_id": intent.actor.key_id,
                    "actor_key_name": intent.actor.key_name,
                    "payload": json.dumps(intent.payload, separators=(",", ":"), ensure_ascii=False),
                    "created_at": intent.created_at,
                },
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
            conn.execute(_DELETE_INTENT, {"intent_id": intent.intent_id})

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

    async def _own(self) -> None:
        """Take this process's owner lock, once, before its first intent exists."""
        if self._owns:
            return
        async with self._owning:
            if self._owns:
                return
            session_locks = self.db.session_locks
            if session_locks is not None:
                await self._owned.enter_async_context(session_locks.hold(self.ownership_key(), shared=False))
            else:
                path = owner_lock_path(self.db.url, self.owner)
                if path is not None:
                    fd = await asyncio.to_thread(_lock_file, path, blocking=True)
                    assert fd is not None
                    self._owned.callback(_unlock_file, path, fd)
            self._owns = True

    @asynccontextmanager
    async def claim(self, owner: str) -> AsyncIterator[bool]:
        """Whether ``owner`` is dead; if so its lock is held here until the block ends."""
        session_locks = self.db.session_locks
        if session_locks is not None:
            async with session_locks.try_hold(self.ownership_key(owner)) as dead:
                yield dead
            return
        path = owner_lock_path(self.db.url, owner)
        if path is None:
            yield True  # an in-memory database: this process is the only one there is
            return
        fd = await asyncio.to_thread(_lock_file, path, blocking=False)
        if fd is None:
            yield False
            return
        try:
            yield True
        finally:
            _unlock_file(path, fd)

    async def aclose(self) -> None:
        await self._owned.aclose()


def owner_lock_path(url: str, owner: str) -> Path | None:
    """The lock file of ``owner`` beside a SQLite database file (None: not a file database)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or ":memory:" in url:
        return None
    database = Path(url[len(prefix) :].split("?", 1)[0])
    # Hidden, and not matching ``trove.db*`` (which start-up chmods 0600 as database files).
    return database.with_name(f".{database.name}.owners") / owner


def _lock_file(path: Path, *, blocking: bool) -> int | None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock_file(path: Path, fd: int) -> None:
    # Unlinked while still locked: a process that finds the name gone has nothing to claim.
    with contextlib.suppress(OSError):
        path.unlink()
    os.close(fd)


def emit_and_close(conn: Any, intent: Intent, type_: str | None, data: dict[str, Any]) -> bool:
    """Delete the intent and, if this transaction is the one that did, record its event.

    Returns whether it was still open (a second resolver finds it gone and emits nothing,
    so an intent yields one event at most).
    """
    gone = conn.execute(_DELETE_INTENT, {"intent_id": intent.intent_id}).rowcount
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
