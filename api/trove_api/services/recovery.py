"""Resolving the intents a crash left: emit the event of a change that happened, undo the rest.

Runs at start-up (before serving) and from the periodic sweep. Each intent is resolved
under its namespace's exclusive lock, so no write, exec or restore of that namespace (on any
replica) moves the evidence while it is being read; the event and the intent's deletion then
share one transaction (``intents.emit_and_close``), so two resolvers cannot both emit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import tarfile
import time
from typing import Any

from sqlalchemy import select

from trove_api.events import types
from trove_api.runtimes.threadfeed import ThreadFedReader
from trove_api.services import intents as kinds
from trove_api.services.intents import Intent, IntentLog, emit_and_close, intent_from_row
from trove_api.services.namespace_locks import NamespaceLocks
from trove_api.services.namespaces import NamespaceService
from trove_api.stores.db import Database
from trove_api.stores.snapshots import SnapshotStore
from trove_api.stores.tables import intents, snapshots
from trove_core.errors import PathNotFoundError, TroveError
from trove_core.runtime import NamespaceRef, Runtime

log = logging.getLogger(__name__)

# This process's own intents that are no longer in flight (the call was cancelled while its
# change ran in a thread) are resolved only once that thread has surely finished.
OWN_ORPHAN_GRACE_S = 60.0
_LIST_MAX_ENTRIES = 1_000_000
_LIST_MAX_DEPTH = 10_000


class Recovery:
    def __init__(
        self,
        db: Database,
        log_: IntentLog,
        runtime: Runtime,
        store: SnapshotStore,
        namespaces: NamespaceService,
        locks: NamespaceLocks,
    ) -> None:
        self.db = db
        self.intents = log_
        self.runtime = runtime
        self.store = store
        self.namespaces = namespaces
        self.locks = locks

    async def run(self) -> int:
        """Resolve every intent no live process is working on; returns how many were resolved."""
        rows = await asyncio.to_thread(self._load)
        by_owner: dict[str, list[Intent]] = {}
        for intent in rows:
            by_owner.setdefault(intent.owner, []).append(intent)
        resolved = 0
        for owner, owned in by_owner.items():
            if owner == self.intents.owner:
                cutoff = time.time() - OWN_ORPHAN_GRACE_S
                orphans = [
                    i for i in owned if i.intent_id not in self.intents.in_flight and i.created_at < cutoff
                ]
                resolved += await self._resolve_all(orphans)
                continue
            async with self.intents.claim(owner) as dead:
                # Taking a live process's owner lock fails; holding a dead one's keeps other
                # processes from recovering the same intents meanwhile.
                if dead:
                    resolved += await self._resolve_all(owned)
        return resolved

    def _load(self) -> list[Intent]:
        with self.db.read() as conn:
            rows = conn.execute(select(intents).order_by(intents.c.created_at)).all()
        return [intent_from_row(row._mapping) for row in rows]

    async def _resolve_all(self, owned: list[Intent]) -> int:
        done = 0
        for intent in owned:
            try:
                await self.resolve(intent)
                done += 1
            except Exception:
                # Left for the next sweep (the store may be down); the others still go ahead.
                log.exception("could not resolve intent %s (%s)", intent.intent_id, intent.kind)
        return done

    async def resolve(self, intent: Intent) -> None:
        async with self.locks.exclusive(intent.workspace_id, intent.namespace):
            event = await self._decide(intent)
        type_, data = event if event is not None else (None, {})
        emitted = await asyncio.to_thread(self._close, intent, type_, data)
        if emitted and type_ is not None:
            log.warning("recovered %s for %s/%s after a crash", type_, intent.workspace_id, intent.namespace)

    def _close(self, intent: Intent, type_: str | None, data: dict[str, Any]) -> bool:
        with self.db.write() as conn:
            if intent.kind == kinds.SNAPSHOT_DELETE and type_ is not None:
                conn.execute(snapshots.delete().where(snapshots.c.id == intent.payload["snapshot_id"]))
            return emit_and_close(conn, intent, type_, data)

    async def _decide(self, intent: Intent) -> tuple[str, dict[str, Any]] | None:
        """The event the intent's change earned, after undoing it if it did not happen."""
        payload = intent.payload
        if intent.kind == kinds.EXEC:
            # The command ran (or was running) when the process died: its effects on the
            # namespace are real, so the audit trail must show it ran, though its exit code
            # and output are lost. exec.completed with interrupted=true, exit_code null.
            return types.EXEC_COMPLETED, {**payload["data"], "interrupted": True}
        if intent.kind == kinds.SNAPSHOT_CREATE:
            # The row and snapshot.created commit with the intent's end, so the intent still
            # being here means neither did: the stored tarball (if any) belongs to nothing.
            await self.store.delete(payload["storage_key"])
            return None
        if intent.kind == kinds.SNAPSHOT_DELETE:
            # Rolled forward: the object may be gone already, so the row must go too.
            await self.store.delete(payload["storage_key"])
            exists = await asyncio.to_thread(self._snapshot_exists, payload["snapshot_id"])
            return (types.SNAPSHOT_DELETED, payload["data"]) if exists else None
        ns = await self.namespaces.find(intent.workspace_id, intent.namespace)
        if ns is None:
            return None
        if intent.kind == kinds.FILE_WRITE:
            digest = await self._file_digest(ns, payload["rel"])
            return (types.FILE_WRITTEN, payload["data"]) if digest == payload["sha256"] else None
        if intent.kind == kinds.FILE_DELETE:
            gone = await self._file_digest(ns, payload["rel"], missing="gone") == "gone"
            return (types.FILE_DELETED, payload["data"]) if gone else None
        if intent.kind == kinds.SNAPSHOT_RESTORE:
            return await self._restored(ns, intent)
        log.error("intent %s has an unknown kind %r; dropped", intent.intent_id, intent.kind)
        return None

    def _snapshot_exists(self, snapshot_id: str) -> bool:
        with self.db.read() as conn:
            found = conn.execute(select(snapshots.c.id).where(snapshots.c.id == snapshot_id)).first()
        return found is not None

    async def _file_digest(self, ns: NamespaceRef, rel: str, *, missing: str = "") -> str:
        try:
            reader = await self.runtime.open_file(ns, rel)
        except PathNotFoundError:
            return missing
        except TroveError:
            return ""  # a directory or a special file: neither the written file nor gone
        try:
            digest = hashlib.sha256()
            async for chunk in reader.iter_bytes(0, reader.stat.size):
                digest.update(chunk)
            return digest.hexdigest()
        finally:
            await reader.aclose()

    async def _restored(self, ns: NamespaceRef, intent: Intent) -> tuple[str, dict[str, Any]] | None:
        """Whether the namespace holds the snapshot's tree: the swap is atomic, so it holds
        either the snapshot or what was there before (then nothing is left to undo: the
        runtime's staging is swept at start-up)."""
        row = await asyncio.to_thread(self._snapshot_key, intent.payload["snapshot_id"])
        if row is None:
            return None
        wanted = await self._tar_digests(row)
        listing, _ = await self.runtime.list_dir(
            ns, "", recursive=True, max_entries=_LIST_MAX_ENTRIES, max_depth=_LIST_MAX_DEPTH
        )
        present = {entry.rel for entry in listing if not entry.is_dir}
        if present != set(wanted):
            return None
        for rel, digest in wanted.items():
            if digest is not None and await self._file_digest(ns, rel) != digest:
                return None
        files = sum(1 for digest in wanted.values() if digest is not None)
        return types.SNAPSHOT_RESTORED, {**intent.payload["data"], "files_restored": files}

    def _snapshot_key(self, snapshot_id: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(
                select(snapshots.c.storage_key).where(snapshots.c.id == snapshot_id)
            ).scalar_one_or_none()

    async def _tar_digests(self, key: str) -> dict[str, str | None]:
        """Each non-directory member's path and content digest (None for a symlink)."""
        reader = await self.store.open(key)
        feed = ThreadFedReader(8)
        worker = asyncio.get_running_loop().run_in_executor(None, _digests, feed)
        worker.add_done_callback(lambda _: feed.worker_stopped())
        try:
            async for chunk in reader.chunks():
                if worker.done():
                    break
                await feed.put(chunk)
            feed.end()
            return await worker
        except BaseException as exc:
            feed.abort(exc)
            with contextlib.suppress(BaseException):
                await worker
            raise
        finally:
            await reader.aclose()


def _digests(feed: ThreadFedReader) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    with tarfile.open(fileobj=feed, mode="r|gz") as tar:  # type: ignore[call-overload]
        for member in tar:
            rel = member.name.removeprefix("./").strip("/")
            if not rel or member.isdir():
                continue
            if member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                digest = hashlib.sha256()
                while data := source.read(1024 * 1024):
                    digest.update(data)
                found[rel] = digest.hexdigest()
            elif member.islnk():
                found[rel] = found.get(member.linkname.removeprefix("./").strip("/"))
            else:
                found[rel] = None
    return found
