"""Namespaces come into being on first write or exec; reads never provision anything.

A workspace may create at most ``max_per_workspace`` namespaces: the count and the insert share
one write transaction, serialised by the process's write lock (SQLite) and an advisory lock
per workspace (PostgreSQL, several replicas), so racing creations never overshoot it.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from trove_api.events import types
from trove_api.events.log import Actor, record
from trove_api.stores import advisory
from trove_api.stores.db import Database
from trove_api.stores.tables import namespaces
from trove_core.clock import now_ts
from trove_core.diskspace import DiskReserve
from trove_core.errors import NamespaceLimitReachedError
from trove_core.runtime import NamespaceRef, Runtime

_CREATE_LOCK = "namespace-create"


class NamespaceService:
    def __init__(
        self,
        db: Database,
        runtime: Runtime,
        uid_base: int,
        *,
        max_per_workspace: int | None = None,
        reserve: DiskReserve | None = None,
    ) -> None:
        self.db = db
        self.runtime = runtime
        self.uid_base = uid_base
        self.max_per_workspace = max_per_workspace
        # Every change passes through ensure(): the one place to stop changes on a full disk.
        self.reserve = reserve or DiskReserve.off()
        # Namespaces are never renamed or re-numbered, so a ref, once provisioned, stays valid.
        self._ready: dict[tuple[str, str], NamespaceRef] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _ref(self, workspace_id: str, name: str, number: int) -> NamespaceRef:
        return NamespaceRef(workspace_id=workspace_id, name=name, uid=self.uid_base + number)

    async def find(self, workspace_id: str, name: str) -> NamespaceRef | None:
        """The namespace if it exists; never creates it."""
        ready = self._ready.get((workspace_id, name))
        if ready is not None:
            return ready
        number = await asyncio.to_thread(self._select, workspace_id, name)
        return None if number is None else self._ref(workspace_id, name, number)

    async def ensure(self, workspace_id: str, name: str, actor: Actor) -> NamespaceRef:
        """The namespace, created on first use; refuses (507) while the data disk is at its reserve."""
        self.reserve.check()
        key = (workspace_id, name)
        ready = self._ready.get(key)
        if ready is not None:
            return ready
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            ready = self._ready.get(key)
            if ready is not None:
                return ready
            number = await asyncio.to_thread(self._select_or_create, workspace_id, name, actor)
            ref = self._ref(workspace_id, name, number)
            await self.runtime.provision(ref)
            self._ready[key] = ref
            return ref

    async def delete(self, workspace_id: str, name: str, actor: Actor) -> bool:
        """Remove the namespace: sandbox, processes, storage, then its row; False if it had none.

        The caller holds the namespace's exclusive lock, so no write or exec is half-way in.
        Storage goes first: a failure there leaves the row, and the delete can be tried again.
        """
        ref = await self.find(workspace_id, name)
        if ref is None:
            return False
        key = (workspace_id, name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            self._ready.pop(key, None)
            await self.runtime.deprovision(ref)
            await asyncio.to_thread(self._delete_row, workspace_id, name, actor)
        self._locks.pop(key, None)
        return True

    def _delete_row(self, workspace_id: str, name: str, actor: Actor) -> None:
        with self.db.write() as conn:
            gone = conn.execute(
                delete(namespaces).where(namespaces.c.workspace_id == workspace_id, namespaces.c.name == name)
            ).rowcount
            if gone:
                record(
                    conn,
                    workspace_id=workspace_id,
                    namespace=name,
                    type_=types.NAMESPACE_DELETED,
                    actor=actor,
                    data={"namespace": name},
                )

    def _select(self, workspace_id: str, name: str) -> int | None:
        with self.db.read() as conn:
            return conn.execute(
                select(namespaces.c.id).where(
                    namespaces.c.workspace_id == workspace_id, namespaces.c.name == name
                )
            ).scalar_one_or_none()

    def _select_or_create(self, workspace_id: str, name: str, actor: Actor) -> int:
        existing = self._select(workspace_id, name)
        if existing is not None:
            return existing
        try:
            # The row and namespace.created commit together, so a crash cannot split them (no
            # intent needed); provisioning the directory after is idempotent and redone by
            # the next ensure() if the process dies first.
            with self.db.write() as conn:
                self._check_limit(conn, workspace_id)
                number = conn.execute(
                    insert(namespaces).values(workspace_id=workspace_id, name=name, created_at=now_ts())
                ).inserted_primary_key
                record(
                    conn,
                    workspace_id=workspace_id,
                    namespace=name,
                    type_=types.NAMESPACE_CREATED,
                    actor=actor,
                    data={"namespace": name},
                )
            assert number is not None
            return int(number[0])
        except IntegrityError:
            # Another replica created it first.
            found = self._select(workspace_id, name)
            assert found is not None
            return found

    def _check_limit(self, conn: Connection, workspace_id: str) -> None:
        if self.max_per_workspace is None:
            return
        # Replicas creating namespaces of one workspace at once take turns here (PostgreSQL).
        advisory.xact_lock(conn, advisory.lock_key(_CREATE_LOCK, workspace_id))
        count = conn.execute(
            select(func.count()).select_from(namespaces).where(namespaces.c.workspace_id == workspace_id)
        ).scalar_one()
        if count >= self.max_per_workspace:
            raise NamespaceLimitReachedError(
                f"This workspace already has {count} namespaces, the most it may have "
                f"(TROVE_MAX_NAMESPACES_PER_WORKSPACE={self.max_per_workspace}); "
                "use an existing namespace"
            )
