"""Per-namespace reader/writer locks: execs and writes share a namespace, a restore excludes them.

Writer-preferring: once a restore waits, new execs and writes queue behind it, so a busy
namespace cannot starve a restore. The in-process lock is all SQLite (one replica) needs.
With PostgreSQL (several replicas) a holder also takes a session advisory lock on the
(workspace, namespace) key, shared or exclusive, after the local one: the local lock keeps
a process from queueing more than one exclusive waiter, PostgreSQL's lock queue orders the
replicas (a waiting exclusive lock holds back later shared ones there too).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from trove_api.stores.advisory import NAMESPACE, SessionLocks, lock_key


@dataclass
class _RWLock:
    readers: int = 0
    writer: bool = False
    writers_waiting: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class NamespaceLocks:
    def __init__(self, cross_process: SessionLocks | None = None) -> None:
        self._locks: dict[tuple[str, str], _RWLock] = {}
        self._users: dict[tuple[str, str], int] = {}
        self._cross = cross_process

    def _replicas(self, key: tuple[str, str], *, shared: bool) -> AbstractAsyncContextManager[None]:
        if self._cross is None:
            return contextlib.nullcontext()
        return self._cross.hold(lock_key(NAMESPACE, *key), shared=shared)

    def _acquire_entry(self, key: tuple[str, str]) -> _RWLock:
        self._users[key] = self._users.get(key, 0) + 1
        return self._locks.setdefault(key, _RWLock())

    def _release_entry(self, key: tuple[str, str]) -> None:
        self._users[key] -= 1
        if not self._users[key]:
            # Forget idle namespaces so the table does not grow with every name ever used.
            del self._users[key]
            del self._locks[key]

    @asynccontextmanager
    async def shared(self, workspace_id: str, namespace: str) -> AsyncIterator[None]:
        """Held by execs and writes: many at once, never during a restore."""
        key = (workspace_id, namespace)
        lock = self._acquire_entry(key)
        try:
            async with lock.changed:
                await lock.changed.wait_for(lambda: not lock.writer and not lock.writers_waiting)
                lock.readers += 1
            try:
                async with self._replicas(key, shared=True):
                    yield
            finally:
                async with lock.changed:
                    lock.readers -= 1
                    lock.changed.notify_all()
        finally:
            self._release_entry(key)

    @asynccontextmanager
    async def exclusive(self, workspace_id: str, namespace: str) -> AsyncIterator[None]:
        """Held by snapshot create and restore: alone in the namespace."""
        key = (workspace_id, namespace)
        lock = self._acquire_entry(key)
        try:
            async with lock.changed:
                lock.writers_waiting += 1
                try:
                    await lock.changed.wait_for(lambda: not lock.writer and not lock.readers)
                finally:
                    lock.writers_waiting -= 1
                    # Readers held back by this (possibly cancelled) waiter re-check.
                    lock.changed.notify_all()
                lock.writer = True
            try:
                async with self._replicas(key, shared=False):
                    yield
            finally:
                async with lock.changed:
                    lock.writer = False
                    lock.changed.notify_all()
        finally:
            self._release_entry(key)
