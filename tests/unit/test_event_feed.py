"""Event feed paging against a real SQLite log: newest first, exclusive since, cursors, scopes."""

from __future__ import annotations

from pathlib import Path

import pytest

from trove_api.events.feed import (
    FeedQueryError,
    Scope,
    decode_cursor,
    list_events,
    parse_since,
)
from trove_api.events.log import SYSTEM, record
from trove_api.stores.db import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 't.db'}")
    database.migrate()
    return database


def _fill(db: Database, n: int, *, namespace: str = "a", type_: str = "file.written") -> list[str]:
    ids = []
    with db.write() as conn:
        for i in range(n):
            ev = record(
                conn, workspace_id="ws-1", namespace=namespace, type_=type_, actor=SYSTEM, data={"i": i}
            )
            ids.append(ev["created_at"])
    return ids


def test_created_at_strictly_increasing(db: Database) -> None:
    stamps = _fill(db, 50)
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 50


def test_newest_first_and_cursor_walks_back_without_overlap(db: Database) -> None:
    _fill(db, 25)
    scope = Scope("ws-1")
    seen: list[int] = []
    cursor = None
    with db.read() as conn:
        while True:
            page = list_events(conn, scope, limit=10, cursor=cursor)
            seen += [e["data"]["i"] for e in page.events]
            cursor = page.next_cursor
            if cursor is None:
                break
    assert seen == list(range(24, -1, -1))


def test_since_is_exclusive_and_returns_oldest_first_chunk(db: Database) -> None:
    stamps = _fill(db, 30)
    scope = Scope("ws-1")
    with db.read() as conn:
        page = list_events(conn, scope, limit=10, since=stamps[4])
        assert [e["data"]["i"] for e in page.events] == list(range(14, 4, -1))
        assert page.next_cursor is not None
        # A tail-style loop: the bookmark is the newest printed event.
        page2 = list_events(conn, scope, limit=10, since=page.events[0]["created_at"])
        assert [e["data"]["i"] for e in page2.events] == list(range(24, 14, -1))
        via_cursor = list_events(conn, scope, limit=10, since=stamps[4], cursor=page.next_cursor)
        assert via_cursor.events == page2.events
        last = list_events(conn, scope, limit=10, since=stamps[-1])
        assert last.events == []
        assert last.next_cursor is None


def test_since_accepts_offset_and_space_forms(db: Database) -> None:
    stamps = _fill(db, 3)
    offset = stamps[0].replace("Z", "+00:00")
    assert parse_since(offset) == stamps[0]
    assert parse_since(offset.replace("+", " ")) == stamps[0]
    with pytest.raises(FeedQueryError):
        parse_since("yesterday")


def test_filters_and_locked_scope(db: Database) -> None:
    _fill(db, 3, namespace="a")
    _fill(db, 2, namespace="b", type_="exec.completed")
    _fill(db, 1, namespace="a", type_="key.created")
    with db.read() as conn:
        assert len(list_events(conn, Scope("ws-1", namespace="b"), limit=100).events) == 2
        typed = list_events(conn, Scope("ws-1", types=frozenset({"exec.completed"})), limit=100).events
        assert {e["type"] for e in typed} == {"exec.completed"}
        locked = list_events(conn, Scope("ws-1", namespace="a", locked=True), limit=100).events
        assert {e["type"] for e in locked} == {"file.written"}
        assert list_events(conn, Scope("ws-2"), limit=100).events == []


def test_bad_cursor_and_limit_clamp(db: Database) -> None:
    _fill(db, 3)
    with pytest.raises(FeedQueryError):
        decode_cursor("not-a-cursor")
    with db.read() as conn:
        assert len(list_events(conn, Scope("ws-1"), limit=0).events) == 1
        assert len(list_events(conn, Scope("ws-1"), limit=10**6).events) == 3
