"""Per-namespace reader/writer locks: execs and writes share a namespace, a restore excludes them.

Writer-preferring: once a restore waits, new execs and writes queue behind it, so a busy
namespace cannot starve a restore. In-process only, which is what the local runtime needs
(its namespace directories belong to one server process).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _RWLock:
    readers: int = 0
    writer: bool = False
    writers_waiting: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class NamespaceLocks:
    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], _RWLock] = {}
        self._users: dict[tuple[str, str], int] = {}

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
                yield
            finally:
                async with lock.changed:
                    lock.writer = False
                    lock.changed.notify_all()
        finally:
            self._release_entry(key)
