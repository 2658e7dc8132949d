"""The metadata database: engine creation, SQLite tuning, transactions and migrations."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text

from trove_api.stores import advisory

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_TOPICS = "trove.commit_topics"


class Database:
    """One engine; ``write()`` transactions are serialised within the process.

    SQLite allows one writer at a time anyway, and a deferred SQLite transaction that reads
    and then writes fails with SQLITE_BUSY if another writer committed in between. Taking a
    process lock around every write transaction avoids that and also keeps read-then-insert
    sequences (event ordering) race-free. Reads never take it (WAL readers do not block).
    On PostgreSQL several replicas share the database, so the process lock is not enough:
    read-then-insert sequences take advisory locks (``stores.advisory``) as well.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._write_lock = threading.Lock()
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self._session_locks: advisory.SessionLocks | None = None

    @property
    def is_postgres(self) -> bool:
        """Several replicas may share this database (SQLite: one process by design)."""
        return self.engine.dialect.name == "postgresql"

    @property
    def session_locks(self) -> advisory.SessionLocks | None:
        """Cross-replica locks held across awaits (PostgreSQL only; created on first use)."""
        if self.is_postgres and self._session_locks is None:
            self._session_locks = advisory.SessionLocks(self.url)
        return self._session_locks

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._write_lock, self.engine.begin() as connection:
            connection.info.pop(_TOPICS, None)
            try:
                yield connection
            finally:
                topics: set[str] = connection.info.pop(_TOPICS, set())
            # Committed: only now may waiters (event hub, webhook dispatcher) read the rows.
        for topic in topics:
            for callback in list(self._listeners.get(topic, ())):
                callback()

    @contextmanager
    def single(self, *, write: bool = False) -> Iterator[Connection]:
        """A connection for one statement that is its own transaction (a key lookup, an
        intent's insert). On PostgreSQL it runs in autocommit: no BEGIN before it and no
        COMMIT or ROLLBACK after it, two round trips fewer of an exec's ~20 (the statement
        commits as a transaction of its own would, durably: synchronous_commit). Only for
        one statement: a second would not share its transaction. ``write``: under the
        process's write lock, as ``write()`` (SQLite's one writer)."""
        with self._write_lock if write else contextlib.nullcontext(), self.engine.connect() as connection:
            if self.is_postgres:
                connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection
            if write:
                connection.commit()

    def listen(self, topic: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the writer's thread) after each commit that flagged ``topic``."""
        self._listeners.setdefault(topic, []).append(callback)

    def unlisten(self, topic: str, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.get(topic, []).remove(callback)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    async def ping(self, timeout_s: float) -> None:
        """Raise unless the database answers ``SELECT 1`` within ``timeout_s`` (readiness)."""
        async with asyncio.timeout(timeout_s):
            await asyncio.to_thread(self._select_one)

    def _select_one(self) -> None:
        with self.read() as conn:
            conn.execute(text("SELECT 1"))

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self._write_lock, self.engine.begin() as connection:
            # Replicas starting together: the first migrates, the others wait here and then
            # find the schema at head (the lock ends with this transaction).
            advisory.xact_lock(connection, advisory.lock_key(advisory.MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Run a check-then-act block (first-start bootstrap) on one replica at a time."""
        if not self.is_postgres:
            yield
            return
        # A transaction that only holds the lock: ending it (however) releases the lock.
        with self.engine.begin() as connection:
            advisory.xact_lock(connection, advisory.lock_key(advisory.BOOTSTRAP, name))
            yield

    def dispose(self) -> None:
        if self._session_locks is not None:
            self._session_locks.dispose()
        self.engine.dispose()


def flag_commit(connection: Connection, topic: str) -> None:
    """Tell ``topic``'s listeners once the transaction ``connection`` is in commits."""
    connection.info.setdefault(_TOPICS, set()).add(topic)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (auth on every request) proceed while a writer commits. FULL: each
    # commit fsyncs the WAL, so an answered call's rows survive a power loss (NORMAL could
    # lose the last commits, i.e. events of changes already answered as done).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
