"""The event hub: one poller per process fans new events out to every SSE subscriber.

Subscribers never query the database on their own while they keep up: the hub reads new
rows once (woken right after each local commit, and every ``poll_interval`` for events
other processes wrote) into a bounded buffer and wakes everyone waiting. A subscriber that
fell behind the buffer, or resumes from an old ``Last-Event-ID``, catches up from the
database in chunks and then follows the buffer again. On PostgreSQL the hub never moves
past a seq that an in-flight transaction may still commit (``horizon``), so a transaction
that commits late (another replica, another workspace) is not missed by live streams.

On SQLite, while nobody follows, the hub reads nothing: reading each new event back cost
every exec about a millisecond of CPU on a two-core node. It only notes that it is behind, and
the next follower moves it to the end of the log first, catching up from the database as a
follower that resumes from an old position would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from trove_api.events import feed, horizon
from trove_api.events.log import EVENTS_TOPIC, envelope_from_row
from trove_api.stores.db import Database
from trove_api.stores.tables import events

log = logging.getLogger(__name__)

BUFFER_SIZE = 4096
CATCH_UP_CHUNK = 500
GAP_RETRY_S = 0.05  # how soon to look again while waiting for a late commit


@dataclass(frozen=True)
class Buffered:
    seq: int
    event: dict[str, Any]


class EventHub:
    def __init__(self, db: Database, *, poll_interval: float) -> None:
        self.db = db
        self.poll_interval = poll_interval
        self._buffer: deque[Buffered] = deque(maxlen=BUFFER_SIZE)
        # The buffer holds every event with floor < seq <= head.
        self._floor = 0
        self._head = 0
        # Set (and replaced) whenever the head moves: waiters need no lock.
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._gaps = horizon.GapGuard()
        self._followers = 0
        self._behind = False  # events may have committed that the buffer does not hold
        self._pulling = asyncio.Lock()

    @property
    def _idle(self) -> bool:
        """Nobody follows and skipping reads is safe (see the module's docstring)."""
        return self._followers == 0 and not self.db.is_postgres

    async def current_head(self) -> int:
        """The log position of the newest event: a stream that starts from "now" starts here."""
        if self._idle:
            # The wake-up for a commit just made may not have run yet: read the log's end.
            self._behind = True
        await self._catch_up_if_behind()
        return self._head

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._head = self._floor = await asyncio.to_thread(self._max_seq)
        self.db.listen(EVENTS_TOPIC, self._poke)
        self._task = asyncio.create_task(self._run(), name="trove-event-hub")

    async def aclose(self) -> None:
        self._closed = True
        self.db.unlisten(EVENTS_TOPIC, self._poke)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _poke(self) -> None:
        # Called from the writer's thread after its commit.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    def _max_seq(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(select(func.max(events.c.seq))).scalar_one_or_none() or 0)

    def _fetch_new(self, after: int) -> tuple[list[Buffered], bool]:
        """Rows after ``after`` that may be published, and whether a later row is held back."""
        query = select(events).where(events.c.seq > after).order_by(events.c.seq.asc()).limit(CATCH_UP_CHUNK)
        with self.db.read() as conn:
            if not self.db.is_postgres:
                # One process commits in seq order (``Database.write``): nothing to wait for.
                rows = conn.execute(query).mappings()
                return [Buffered(int(row["seq"]), envelope_from_row(row)) for row in rows], False
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                in_progress = horizon.read_snapshot(conn)  # fixes the snapshot the rows come from
                fetched = [
                    Buffered(int(row["seq"]), envelope_from_row(row))
                    for row in conn.execute(query).mappings()
                ]
                snapshot = horizon.Snapshot(in_progress, horizon.still_running(conn, in_progress))
        admitted = self._gaps.admit(after, [item.seq for item in fetched], snapshot)
        return fetched[:admitted], admitted < len(fetched)

    async def _run(self) -> None:
        held_back = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GAP_RETRY_S if held_back else self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            if self._idle:
                self._behind = True
                continue
            try:
                async with self._pulling:
                    held_back = await self._pull()
            except Exception:  # the next tick is the retry
                log.exception("event hub poll failed")

    async def _catch_up_if_behind(self) -> None:
        if not self._behind:
            return
        async with self._pulling:
            if not self._behind:
                return
            # Only SQLite lags (see the module's docstring): the rows it skipped are all
            # committed, so the end of the log is the max seq, and a follower still before it
            # reads the difference from the database (``follow``).
            head = await asyncio.to_thread(self._max_seq)
            self._buffer.clear()
            self._head = self._floor = max(head, self._head)
            self._behind = False
            self._notify()

    async def _pull(self) -> bool:
        """Read what is new into the buffer; True if rows wait behind an unsettled gap."""
        while True:
            fresh, held_back = await asyncio.to_thread(self._fetch_new, self._head)
            for item in fresh:
                if len(self._buffer) == self._buffer.maxlen:
                    self._floor = self._buffer[0].seq
                self._buffer.append(item)
            if fresh:
                self._head = fresh[-1].seq
                self._notify()
            if held_back or len(fresh) < CATCH_UP_CHUNK:
                return held_back

    async def follow(
        self,
        scope: feed.Scope,
        *,
        after: int | None,
        keepalive: float,
        also: frozenset[str] = frozenset(),
    ) -> AsyncGenerator[dict[str, Any] | None, None]:
        """Events visible to ``scope`` after log position ``after`` (None: from now), forever.

        Yields None every ``keepalive`` seconds without an event, so the caller can ping.
        Live events of the scope's workspace whose type is in ``also`` are yielded even when
        the scope does not admit them (e.g. ``key.revoked`` to a stream that must end on it).
        """
        self._followers += 1
        try:
            await self._catch_up_if_behind()
            cursor = self._head if after is None else after
            async for event in self._follow(scope, cursor, keepalive, also):
                yield event
        finally:
            self._followers -= 1

    async def _follow(
        self, scope: feed.Scope, cursor: int, keepalive: float, also: frozenset[str]
    ) -> AsyncIterator[dict[str, Any] | None]:
        while not self._closed:
            if cursor < self._floor:
                # Everything up to this floor was committed before the query below starts.
                floor = self._floor
                chunk = await asyncio.to_thread(self._catch_up, scope, cursor)
                for seq, event in chunk:
                    cursor = seq
                    yield event
                if len(chunk) < CATCH_UP_CHUNK:
                    cursor = max(cursor, floor)
                continue
            pending = self._newer_than(cursor)
            if pending:
                for item in pending:
                    cursor = item.seq
                    # The buffer holds every workspace's events: a stream sees only its own.
                    if item.event["workspace_id"] == scope.workspace_id and (
                        item.event["type"] in also
                        or scope.admits(item.event["namespace"], item.event["type"])
                    ):
                        yield item.event
                continue
            if not await self._wait_past(cursor, keepalive):
                yield None

    def _newer_than(self, cursor: int) -> list[Buffered]:
        # Scan from the newest end: a subscriber that keeps up touches only the new items.
        found: list[Buffered] = []
        for item in reversed(self._buffer):
            if item.seq <= cursor:
                break
            found.append(item)
        found.reverse()
        return found

    def _catch_up(self, scope: feed.Scope, cursor: int) -> list[tuple[int, dict[str, Any]]]:
        with self.db.read() as conn:
            return feed.after_seq(conn, scope, cursor, CATCH_UP_CHUNK)

    async def _wait_past(self, cursor: int, wait_s: float) -> bool:
        if self._head > cursor or self._closed:
            return True
        try:
            async with asyncio.timeout(wait_s):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True
