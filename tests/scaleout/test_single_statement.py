"""``Database.single``: one statement as its own transaction (PostgreSQL: autocommit, no
BEGIN/COMMIT round trips), without leaking autocommit into the pool's later transactions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, insert, select

from tests.support.postgres import dsn_of
from trove_api.stores.db import Database
from trove_api.stores.tables import intents


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "postgresql":
        url = request.getfixturevalue("database_url")
    else:
        url = f"sqlite:///{tmp_path / 'trove.db'}"
    made = Database(url)
    made.migrate()
    yield made
    made.dispose()


def _row(intent_id: str) -> dict[str, object]:
    return {
        "id": intent_id,
        "owner": "proc-test",
        "workspace_id": "ws-test",
        "namespace": "ns",
        "kind": "exec",
        "actor_key_id": None,
        "actor_key_name": "test",
        "payload": "{}",
        "created_at": time.time(),
    }


def _ids(db: Database) -> set[str]:
    with db.read() as conn:
        return set(conn.execute(select(intents.c.id)).scalars())


def test_a_single_write_commits_and_later_transactions_stay_atomic(db: Database) -> None:
    with db.single(write=True) as conn:
        conn.execute(insert(intents), _row("int-single"))
    if db.is_postgres:  # committed: another session sees it at once
        with psycopg.connect(dsn_of(db.url)) as other:
            found = other.execute("SELECT count(*) FROM intents WHERE id = 'int-single'").fetchone()
        assert found == (1,)
    # The pool hands the same connection back: a failed transaction on it must still roll
    # back whole (had autocommit stayed on, the first insert would have committed alone).
    with pytest.raises(RuntimeError):
        _insert_then_fail(db)
    assert _ids(db) == {"int-single"}


def _insert_then_fail(db: Database) -> None:
    with db.write() as conn:
        conn.execute(insert(intents), _row("int-rolled-back"))
        raise RuntimeError("fail the transaction")


def test_a_single_read_sees_what_was_committed(db: Database) -> None:
    with db.write() as conn:
        conn.execute(insert(intents), _row("int-read"))
    with db.single() as conn:
        found = conn.execute(select(func.count()).select_from(intents).where(intents.c.id == "int-read"))
        assert found.scalar_one() == 1
