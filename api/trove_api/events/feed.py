"""Reading the event log: pages newest first, exclusive ``since``, opaque cursors, visibility.

Two directions (WIRE.md A10): without ``since`` a page is the newest ``limit`` events and the
cursor walks back in time; with ``since`` a page is the *oldest* ``limit`` events strictly
after it (returned newest first), so ``trove tail`` never skips the middle of a burst, and
the cursor walks forward. ``created_at`` is unique per workspace, so it alone is the key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Select, select

from trove_api.events import types
from trove_api.events.log import envelope_from_row
from trove_api.stores.tables import events
from trove_core.clock import format_ts, parse_ts

MAX_LIMIT = 1000
# Workspace-level events a key locked to one namespace must not see (WIRE.md A12).
WORKSPACE_LEVEL_TYPES = frozenset({types.KEY_CREATED, types.KEY_REVOKED, types.WORKSPACE_CREATED})

Direction = Literal["older", "newer"]


class FeedQueryError(ValueError):
    """A malformed ``since``, ``cursor`` or ``types`` value."""


@dataclass(frozen=True)
class Scope:
    """What one reader may see: a workspace, optionally one namespace, optionally some types."""

    workspace_id: str
    namespace: str | None = None
    types: frozenset[str] | None = None
    locked: bool = False

    def admits(self, namespace: str | None, type_: str) -> bool:
        if self.locked and type_ in WORKSPACE_LEVEL_TYPES:
            return False
        if self.namespace is not None and namespace != self.namespace:
            return False
        return self.types is None or type_ in self.types

    def where(self, query: Select[Any]) -> Select[Any]:
        query = query.where(events.c.workspace_id == self.workspace_id)
        if self.namespace is not None:
            query = query.where(events.c.namespace == self.namespace)
        if self.types is not None:
            query = query.where(events.c.type.in_(sorted(self.types)))
        if self.locked:
            query = query.where(events.c.type.not_in(sorted(WORKSPACE_LEVEL_TYPES)))
        return query


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    next_cursor: str | None


def parse_types(raw: str | Sequence[str] | None) -> frozenset[str] | None:
    """``a,b`` (or repeated values) → a set; empty → no filter."""
    if raw is None:
        return None
    items = [raw] if isinstance(raw, str) else list(raw)
    names = {part.strip() for item in items for part in item.split(",") if part.strip()}
    if any(len(name) > 64 for name in names):
        raise FeedQueryError("Event type names are at most 64 characters")
    return frozenset(names) or None


def parse_since(raw: str | None) -> str | None:
    """Any ISO-8601 form the CLI sends (``…Z``, ``…+00:00``) → our fixed-width stamp."""
    if raw is None or not raw.strip():
        return None
    try:
        return format_ts(parse_ts(raw))
    except ValueError as exc:
        raise FeedQueryError(f"Invalid since timestamp {raw[:64]!r}: expected ISO-8601") from exc


def encode_cursor(direction: Direction, at: str) -> str:
    raw = json.dumps({"d": direction, "at": at}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Direction, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        direction, at = value["d"], value["at"]
        if direction not in ("older", "newer") or not isinstance(at, str):
            raise ValueError(direction)
        return direction, format_ts(parse_ts(at))
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise FeedQueryError("Invalid cursor: pass a next_cursor value from a previous page") from exc


def clamp_limit(limit: int) -> int:
    return max(1, min(MAX_LIMIT, limit))


def list_events(
    conn: Connection,
    scope: Scope,
    *,
    limit: int,
    since: str | None = None,
    cursor: str | None = None,
) -> Page:
    """One page of events, newest first (``since`` is exclusive and already normalised)."""
    limit = clamp_limit(limit)
    direction: Direction = "newer" if since is not None else "older"
    bound = since
    if cursor:
        direction, bound = decode_cursor(cursor)
    query = scope.where(select(events))
    if direction == "newer":
        assert bound is not None
        lower = bound if since is None else max(bound, since)
        query = query.where(events.c.created_at > lower).order_by(events.c.created_at.asc())
    else:
        if bound is not None:
            query = query.where(events.c.created_at < bound)
        if since is not None:
            query = query.where(events.c.created_at > since)
        query = query.order_by(events.c.created_at.desc())
    rows = conn.execute(query.limit(limit + 1)).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    if direction == "newer":
        rows = list(reversed(rows))
    page = [envelope_from_row(row) for row in rows]
    next_cursor = None
    if more and page:
        edge = page[0]["created_at"] if direction == "newer" else page[-1]["created_at"]
        next_cursor = encode_cursor(direction, edge)
    return Page(events=page, next_cursor=next_cursor)


def seq_of(conn: Connection, workspace_id: str, event_id: str) -> int | None:
    """The log position of an event (for SSE ``Last-Event-ID``), or None if unknown."""
    return conn.execute(
        select(events.c.seq).where(events.c.workspace_id == workspace_id, events.c.id == event_id)
    ).scalar_one_or_none()


def after_seq(conn: Connection, scope: Scope, seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """Events after a log position, oldest first (SSE catch-up)."""
    rows = conn.execute(
        scope.where(select(events)).where(events.c.seq > seq).order_by(events.c.seq.asc()).limit(limit)
    ).mappings()
    return [(int(row["seq"]), envelope_from_row(row)) for row in rows]
