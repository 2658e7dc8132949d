"""Snapshots: metadata rows, the runtime's tar stream into the store and back, all-or-nothing restore."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select

from trove_api.events import types
from trove_api.events.log import Actor, record
from trove_api.schemas.snapshots import SnapshotRestored
from trove_api.services import intents as kinds
from trove_api.services.events import EventEmitter
from trove_api.services.intents import Intent, IntentLog, emit_and_close
from trove_api.services.namespace_locks import NamespaceLocks
from trove_api.services.namespaces import NamespaceService
from trove_api.stores.db import Database
from trove_api.stores.snapshots import SnapshotReader, SnapshotStore
from trove_api.stores.tables import snapshots
from trove_core.clock import now_ts
from trove_core.errors import InvalidRequestError, SnapshotCorruptError, SnapshotNotFoundError
from trove_core.names import AUTO_SNAPSHOT_PREFIX, SNAPSHOT_PREFIX, new_id
from trove_core.runtime import Runtime

log = logging.getLogger(__name__)

LABEL_MAX_CHARS = 128
LIST_MAX_LIMIT = 1000


@dataclass(frozen=True)
class SnapshotRecord:
    snapshot_id: str
    workspace_id: str
    namespace: str
    label: str | None
    kind: str
    size_bytes: int
    checksum: str
    storage_key: str
    created_at: str


def storage_key(workspace_id: str, namespace: str, snapshot_id: str) -> str:
    """Where a tarball lives in the store: keyed by (workspace, namespace) like everything else."""
    return f"{workspace_id}/{namespace}/{snapshot_id}.tar.gz"


class SnapshotService:
    def __init__(
        self,
        db: Database,
        runtime: Runtime,
        store: SnapshotStore,
        namespaces: NamespaceService,
        emitter: EventEmitter,
        locks: NamespaceLocks,
        intents: IntentLog,
    ) -> None:
        self.intents = intents
        self.db = db
        self.runtime = runtime
        self.store = store
        self.namespaces = namespaces
        self.emitter = emitter
        self.locks = locks

    # -- create ---------------------------------------------------------------------------

    async def create(
        self, workspace_id: str, namespace: str, label: str | None, actor: Actor, *, auto: bool = False
    ) -> SnapshotRecord:
        if label is not None and len(label) > LABEL_MAX_CHARS:
            raise InvalidRequestError(f"label is {len(label)} characters; the limit is {LABEL_MAX_CHARS}")
        ns = await self.namespaces.ensure(workspace_id, namespace, actor)
        snapshot_id = new_id(AUTO_SNAPSHOT_PREFIX if auto else SNAPSHOT_PREFIX)
        key = storage_key(workspace_id, namespace, snapshot_id)
        digest = hashlib.sha256()
        # Exclusive: the tarball is one point in time, not a mix of before and after an exec.
        # A crash after the upload but before the row would leave a tarball nobody lists:
        # the intent lets recovery delete it.
        intent = await self.intents.begin(
            workspace_id, namespace, kinds.SNAPSHOT_CREATE, actor, {"storage_key": key}
        )
        async with self.intents.around(intent), self.locks.exclusive(workspace_id, namespace):
            # Taken before the export: any change reported after this moment marks the
            # namespace as changed again (the daily job compares against it).
            created_at = now_ts()
            stream = self.runtime.export_tar(ns)
            try:
                size = await self.store.put(key, _hashed(stream, digest))
            finally:
                await _aclose(stream)
        snap = SnapshotRecord(
            snapshot_id=snapshot_id,
            workspace_id=workspace_id,
            namespace=namespace,
            label=label,
            kind="auto" if auto else "manual",
            size_bytes=size,
            checksum=f"sha256:{digest.hexdigest()}",
            storage_key=key,
            created_at=created_at,
        )
        try:
            await asyncio.to_thread(self._insert, snap, actor, intent)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.store.delete(key)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.intents.abandon(intent))
            raise
        finally:
            self.intents.in_flight.discard(intent.intent_id)
        return snap

    def _insert(self, snap: SnapshotRecord, actor: Actor, intent: Intent) -> None:
        with self.db.write() as conn:
            emit_and_close(conn, intent, None, {})
            conn.execute(
                insert(snapshots).values(
                    id=snap.snapshot_id,
                    workspace_id=snap.workspace_id,
                    namespace=snap.namespace,
                    label=snap.label,
                    kind=snap.kind,
                    size_bytes=snap.size_bytes,
                    checksum=snap.checksum,
                    storage_key=snap.storage_key,
                    created_at=snap.created_at,
                )
            )
            record(
                conn,
                workspace_id=snap.workspace_id,
                namespace=snap.namespace,
                type_=types.SNAPSHOT_CREATED,
                actor=actor,
                data={"snapshot_id": snap.snapshot_id, "label": snap.label, "size_bytes": snap.size_bytes},
            )

    # -- read -----------------------------------------------------------------------------

    async def get(self, workspace_id: str, namespace: str, snapshot_id: str) -> SnapshotRecord:
        """The snapshot, or 404 — also for another namespace's snapshot (its id is not a secret)."""
        found = await asyncio.to_thread(self._get, workspace_id, namespace, snapshot_id)
        if found is None:
            raise SnapshotNotFoundError(f"Snapshot not found: {snapshot_id}")
        return found

    def _get(self, workspace_id: str, namespace: str, snapshot_id: str) -> SnapshotRecord | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(snapshots).where(
                    snapshots.c.id == snapshot_id,
                    snapshots.c.workspace_id == workspace_id,
                    snapshots.c.namespace == namespace,
                )
            ).one_or_none()
        return None if row is None else snapshot_from_row(row._mapping)

    async def listing(
        self, workspace_id: str, namespace: str, *, limit: int | None = None, cursor: str | None = None
    ) -> tuple[list[SnapshotRecord], str | None]:
        """Newest first; complete unless ``limit`` is given (then ``next_cursor`` continues)."""
        after = _decode_cursor(cursor) if cursor else None
        return await asyncio.to_thread(self._list, workspace_id, namespace, limit, after)

    def _list(
        self, workspace_id: str, namespace: str, limit: int | None, after: tuple[str, str] | None
    ) -> tuple[list[SnapshotRecord], str | None]:
        query = (
            select(snapshots)
            .where(snapshots.c.workspace_id == workspace_id, snapshots.c.namespace == namespace)
            .order_by(snapshots.c.created_at.desc(), snapshots.c.id.desc())
        )
        if after is not None:
            created_at, snapshot_id = after
            query = query.where(
                or_(
                    snapshots.c.created_at < created_at,
                    and_(snapshots.c.created_at == created_at, snapshots.c.id < snapshot_id),
                )
            )
        if limit is not None:
            query = query.limit(limit + 1)
        with self.db.read() as conn:
            rows = [snapshot_from_row(row._mapping) for row in conn.execute(query)]
        if limit is None or len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        return rows, _encode_cursor(rows[-1])

    async def open_download(
        self, workspace_id: str, namespace: str, snapshot_id: str
    ) -> tuple[SnapshotRecord, SnapshotReader]:
        snap = await self.get(workspace_id, namespace, snapshot_id)
        return snap, await self.store.open(snap.storage_key)

    # -- restore --------------------------------------------------------------------------

    async def restore(
        self, workspace_id: str, namespace: str, snapshot_id: str, actor: Actor
    ) -> SnapshotRestored:
        snap = await self.get(workspace_id, namespace, snapshot_id)
        ns = await self.namespaces.ensure(workspace_id, namespace, actor)
        async with self.locks.exclusive(workspace_id, namespace):
            # Recovery tells a restore that swapped in from one that did not by comparing the
            # namespace with the snapshot (the swap is atomic: it holds one or the other).
            intent = await self.intents.begin(
                workspace_id,
                namespace,
                kinds.SNAPSHOT_RESTORE,
                actor,
                {"snapshot_id": snapshot_id, "data": {"snapshot_id": snapshot_id}},
            )
            async with self.intents.around(intent):
                reader = await self.store.open(snap.storage_key)
                chunks = _verified(reader.chunks(), snap)
                try:
                    count = await self.runtime.import_tar(ns, chunks)
                finally:
                    await _aclose(chunks)
                    await reader.aclose()
        await self.intents.complete(
            intent, types.SNAPSHOT_RESTORED, {"snapshot_id": snapshot_id, "files_restored": count}
        )
        return SnapshotRestored(
            snapshot_id=snapshot_id, namespace=namespace, files_restored=count, restored_at=now_ts()
        )

    # -- delete ---------------------------------------------------------------------------

    async def delete(self, workspace_id: str, namespace: str, snapshot_id: str, actor: Actor) -> None:
        snap = await self.get(workspace_id, namespace, snapshot_id)
        await self.remove(snap, actor)

    async def remove(self, snap: SnapshotRecord, actor: Actor) -> None:
        """Delete the object, then the row (a failed store delete keeps the row: retry later).

        A crash in between would leave a row whose tarball is gone: the intent makes
        recovery finish the delete instead."""
        intent = await self.intents.begin(
            snap.workspace_id,
            snap.namespace,
            kinds.SNAPSHOT_DELETE,
            actor,
            {
                "snapshot_id": snap.snapshot_id,
                "storage_key": snap.storage_key,
                "data": {"snapshot_id": snap.snapshot_id},
            },
        )
        async with self.intents.around(intent):
            await self.store.delete(snap.storage_key)
        try:
            await asyncio.to_thread(self._delete_row, snap, actor, intent)
        finally:
            self.intents.in_flight.discard(intent.intent_id)

    def _delete_row(self, snap: SnapshotRecord, actor: Actor, intent: Intent) -> None:
        with self.db.write() as conn:
            emit_and_close(conn, intent, None, {})
            gone = conn.execute(delete(snapshots).where(snapshots.c.id == snap.snapshot_id)).rowcount
            if gone:
                record(
                    conn,
                    workspace_id=snap.workspace_id,
                    namespace=snap.namespace,
                    type_=types.SNAPSHOT_DELETED,
                    actor=actor,
                    data={"snapshot_id": snap.snapshot_id},
                )


async def _hashed(chunks: AsyncIterator[bytes], digest: Any) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        # hashlib releases the GIL on large buffers: hash off the event loop.
        await asyncio.to_thread(digest.update, chunk)
        yield chunk


async def _verified(chunks: AsyncIterator[bytes], snap: SnapshotRecord) -> AsyncIterator[bytes]:
    """The stored bytes, failing at the end (before any swap) if size or checksum differ."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        await asyncio.to_thread(digest.update, chunk)
        size += len(chunk)
        yield chunk
    if size != snap.size_bytes or f"sha256:{digest.hexdigest()}" != snap.checksum:
        raise SnapshotCorruptError(
            f"Snapshot {snap.snapshot_id} refused: the stored tarball does not match its checksum"
        )


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def snapshot_from_row(row: Any) -> SnapshotRecord:
    return SnapshotRecord(
        snapshot_id=row["id"],
        workspace_id=row["workspace_id"],
        namespace=row["namespace"],
        label=row["label"],
        kind=row["kind"],
        size_bytes=int(row["size_bytes"]),
        checksum=row["checksum"],
        storage_key=row["storage_key"],
        created_at=row["created_at"],
    )


def _encode_cursor(snap: SnapshotRecord) -> str:
    raw = json.dumps([snap.created_at, snap.snapshot_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, snapshot_id = json.loads(raw)
        return str(created_at), str(snapshot_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidRequestError("cursor is not one this server issued") from exc
