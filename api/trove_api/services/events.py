"""Events as services see them: emitting (one short write transaction per event, after the
change) and reading (the paged feed for ``trove tail``/``events list`` and the SSE stream),
narrowed to what the caller may see. The log itself is ``trove_api.events``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from trove_api.events import feed, sse, types
from trove_api.events.hub import EventHub
from trove_api.events.log import Actor, record
from trove_api.services.auth import Caller, key_is_active
from trove_api.stores.db import Database
from trove_core.errors import BadRequestError, NamespaceForbiddenError
from trove_core.names import validate_namespace

SSE_RETRY_MS = 3000
_REVOCATIONS = frozenset({types.KEY_REVOKED})


def scope_for(caller: Caller, *, namespace: str | None, types: str | None) -> feed.Scope:
    """What ``caller`` may read, narrowed by the query (WIRE.md A12)."""
    wanted = (namespace or "").strip() or None
    if caller.namespace is not None:
        if wanted is not None and wanted != caller.namespace:
            raise NamespaceForbiddenError(
                f"This key is locked to namespace {caller.namespace!r}; it cannot read {wanted[:140]!r}"
            )
        wanted = caller.namespace
    elif wanted is not None:
        validate_namespace(wanted)
    try:
        type_set = feed.parse_types(types)
    except feed.FeedQueryError as exc:
        raise BadRequestError(str(exc)) from exc
    return feed.Scope(
        workspace_id=caller.workspace_id,
        namespace=wanted,
        types=type_set,
        locked=caller.namespace is not None,
    )


class EventFeedService:
    def __init__(self, db: Database, hub: EventHub, *, keepalive_s: float) -> None:
        self.db = db
        self.hub = hub
        self.keepalive_s = keepalive_s

    async def page(
        self, scope: feed.Scope, *, limit: int, since: str | None, cursor: str | None
    ) -> feed.Page:
        return await asyncio.to_thread(self._page, scope, limit=limit, since=since, cursor=cursor)

    def _page(self, scope: feed.Scope, *, limit: int, since: str | None, cursor: str | None) -> feed.Page:
        try:
            normalized = feed.parse_since(since)
            with self.db.read() as conn:
                return feed.list_events(conn, scope, limit=limit, since=normalized, cursor=cursor or None)
        except feed.FeedQueryError as exc:
            raise BadRequestError(str(exc)) from exc

    async def resume_point(self, scope: feed.Scope, last_event_id: str | None) -> int | None:
        """The log position after ``Last-Event-ID`` (None: start from now)."""
        if not last_event_id or not last_event_id.strip():
            return None

        def lookup() -> int | None:
            with self.db.read() as conn:
                return feed.seq_of(conn, scope.workspace_id, last_event_id.strip())

        return await asyncio.to_thread(lookup)

    async def stream(self, scope: feed.Scope, *, after: int | None, key_id: str) -> AsyncIterator[bytes]:
        """SSE bytes: a ``connected`` event, then every visible event, with keep-alive comments.

        The stream ends when the key that opened it is revoked: at once on its ``key.revoked``
        event (even where the scope hides that event, e.g. a namespace-locked key), and in any
        case at the next keep-alive, where the key is looked up again.
        """
        hello: dict[str, Any] = {
            "type": "connected",
            "workspace_id": scope.workspace_id,
            "namespace": scope.namespace,
        }
        # Fix the starting point before saying hello: anything after the hello is streamed.
        start = await self.hub.current_head() if after is None else after
        yield sse.frame(hello, retry_ms=SSE_RETRY_MS)
        follow = self.hub.follow(scope, after=start, keepalive=self.keepalive_s, also=_REVOCATIONS)
        async with contextlib.aclosing(follow) as events:  # a revocation leaves the hub at once
            async for event in events:
                if event is None:
                    if not await asyncio.to_thread(key_is_active, self.db, key_id):
                        break
                    yield sse.KEEPALIVE
                elif event["type"] == types.KEY_REVOKED and event["data"].get("key_id") == key_id:
                    break
                elif scope.admits(event["namespace"], event["type"]):
                    yield sse.frame(event, event_id=event["id"])
            else:
                return  # the hub closed: the server is stopping
        yield sse.KEY_REVOKED_COMMENT


class EventEmitter:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def emit(
        self,
        *,
        workspace_id: str,
        namespace: str | None,
        type_: str,
        actor: Actor,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        return await asyncio.to_thread(
            self.emit_sync,
            workspace_id=workspace_id,
            namespace=namespace,
            type_=type_,
            actor=actor,
            data=data,
        )

    def emit_sync(
        self,
        *,
        workspace_id: str,
        namespace: str | None,
        type_: str,
        actor: Actor,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        with self.db.write() as conn:
            return record(
                conn,
                workspace_id=workspace_id,
                namespace=namespace,
                type_=type_,
                actor=actor,
                data=data,
            )
