"""PostgreSQL advisory locks: what keeps several API replicas from stepping on each other.

Transaction-level locks (``xact_lock``) serialise short critical sections inside a write
transaction (event ordering per workspace, migrations). Session-level locks
(``SessionLocks``) are held for as long as a request needs them (a restore excludes execs
of its namespace on every replica), each on a dedicated connection from a small pool of its
own. On SQLite there is one replica by design and every helper here is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text

# Lock classes: the first part of every key, so keys of different purposes never collide.
MIGRATIONS = "migrations"
BOOTSTRAP = "bootstrap"
EVENTS = "events"
NAMESPACE = "namespace"
INTENTS = "intents"
# Waiters for session locks block a thread each; they get their own, so a restore on another
# replica can never starve the default executor (database work, file I/O) of this one.
MAX_WAITERS = 64


def lock_key(kind: str, *parts: str) -> int:
    """A stable signed 64-bit key (PostgreSQL's ``bigint``) for ``kind`` and ``parts``."""
    raw = "\x00".join((kind, *parts)).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def xact_lock(conn: Connection, key: int) -> None:
    """Hold ``key`` exclusively until ``conn``'s transaction ends (PostgreSQL only)."""
    if is_postgres(conn):
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


class SessionLocks:
    """Shared/exclusive advisory locks held across awaits, released even on cancellation.

    Each holder gets its own connection (autocommit, so it never sits idle in a
    transaction). Release is ``pg_advisory_unlock_all()`` before the connection goes back to
    the pool; if that fails, or a wait is abandoned half-way, the connection is closed
    instead, which makes the server drop every lock the session held.
    """

    def __init__(self, url: str, *, pool_size: int = 4, max_overflow: int = MAX_WAITERS) -> None:
        self.engine: Engine = create_engine(
            url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow
        )
        event.listen(self.engine, "connect", _autocommit)
        self._threads = ThreadPoolExecutor(max_workers=MAX_WAITERS, thread_name_prefix="trove-pglock")

    @asynccontextmanager
    async def hold(self, key: int, *, shared: bool) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        connection = await loop.run_in_executor(self._threads, self.engine.raw_connection)
        waiting = loop.run_in_executor(self._threads, _lock, connection, key, shared)
        try:
            await asyncio.shield(waiting)
        except BaseException:
            # Cancelled (or failed) while waiting: stop the server-side wait; once the thread
            # returns, drop the connection whether or not the lock was granted meanwhile.
            with contextlib.suppress(Exception):
                connection.driver_connection.cancel_safe(timeout=5)  # type: ignore[union-attr]
            waiting.add_done_callback(lambda _: self._threads.submit(_discard, connection))
            raise
        try:
            yield
        finally:
            # Runs to the end in its thread even if this task is cancelled again meanwhile.
            await asyncio.shield(loop.run_in_executor(self._threads, _release, connection))

    @asynccontextmanager
    async def try_hold(self, key: int) -> AsyncIterator[bool]:
        """Take ``key`` exclusively if nobody holds it (yields whether it did), never waiting."""
        loop = asyncio.get_running_loop()
        connection = await loop.run_in_executor(self._threads, self.engine.raw_connection)
        try:
            got = await loop.run_in_executor(self._threads, _try_lock, connection, key)
        except BaseException:
            self._threads.submit(_discard, connection)
            raise
        try:
            yield got
        finally:
            await asyncio.shield(loop.run_in_executor(self._threads, _release, connection))

    def dispose(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()


def _autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.autocommit = True


def _lock(connection: Any, key: int, shared: bool) -> None:
    function = "pg_advisory_lock_shared" if shared else "pg_advisory_lock"
    cursor = connection.cursor()
    try:
        cursor.execute(f"SELECT {function}(%s)", (key,))
    finally:
        cursor.close()


def _try_lock(connection: Any, key: int) -> bool:
    cursor = connection.cursor()
    try:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        return bool(cursor.fetchone()[0])
    finally:
        cursor.close()


def _release(connection: Any) -> None:
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT pg_advisory_unlock_all()")
        cursor.close()
    except Exception:
        _discard(connection)
        return
    connection.close()  # back to the pool, holding nothing


def _discard(connection: Any) -> None:
    # Closing the session releases its advisory locks on the server.
    with contextlib.suppress(Exception):
        connection.invalidate()
