"""The event hub on a real SQLite log: idle while nobody follows, exact once someone does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from trove_api.events import feed
from trove_api.events.hub import EventHub
from trove_api.events.log import SYSTEM, record
from trove_api.stores.db import Database

WORKSPACE = "ws-1"


class CountingDatabase(Database):
    """Counts read transactions, to tell whether the hub touched the log."""

    reads = 0

    @contextmanager
    def read(self) -> Iterator[Connection]:
        self.reads += 1
        with super().read() as connection:
            yield connection


@pytest.fixture
def db(tmp_path: Path) -> CountingDatabase:
    database = CountingDatabase(f"sqlite:///{tmp_path / 't.db'}")
    database.migrate()
    return database


def emit(db: Database, n: int, start: int = 0) -> list[str]:
    ids = []
    with db.write() as conn:
        for i in range(start, start + n):
            event = record(
                conn, workspace_id=WORKSPACE, namespace="a", type_="t", actor=SYSTEM, data={"i": i}
            )
            ids.append(event["id"])
    return ids


async def take(stream: AsyncIterator[dict[str, Any] | None], n: int) -> list[int]:
    got: list[int] = []
    while len(got) < n:
        event = await asyncio.wait_for(anext(stream), 10)
        if event is not None:
            got.append(event["data"]["i"])
    return got


async def settle() -> None:
    # Let the hub's task run the wake-ups the commits scheduled from the writer's thread.
    for _ in range(5):
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(db: Database, poll_interval: float = 30) -> AsyncIterator[EventHub]:
    hub = EventHub(db, poll_interval=poll_interval)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.aclose()


async def test_nobody_following_means_no_reads(db: CountingDatabase) -> None:
    async with running(db, poll_interval=0.05):
        before = db.reads
        await asyncio.to_thread(emit, db, 20)
        await asyncio.sleep(0.3)  # commits and several poll ticks
        assert db.reads == before


async def test_follower_from_now_skips_what_came_before_and_gets_what_comes_after(
    db: CountingDatabase,
) -> None:
    async with running(db) as hub:
        await asyncio.to_thread(emit, db, 3)
        await settle()
        start = await hub.current_head()
        stream = hub.follow(feed.Scope(WORKSPACE), after=start, keepalive=5)
        await asyncio.to_thread(emit, db, 2, 3)
        assert await take(stream, 2) == [3, 4]
        await stream.aclose()


async def test_resume_from_an_event_written_while_nobody_followed(db: CountingDatabase) -> None:
    async with running(db) as hub:
        ids = await asyncio.to_thread(emit, db, 5)
        await settle()
        with db.read() as conn:
            after = feed.seq_of(conn, WORKSPACE, ids[1])
        stream = hub.follow(feed.Scope(WORKSPACE), after=after, keepalive=5)
        assert await take(stream, 3) == [2, 3, 4]
        await asyncio.to_thread(emit, db, 1, 5)  # live once caught up
        assert await take(stream, 1) == [5]
        await stream.aclose()
        # Nobody follows again: later events are not read until someone does.
        await settle()
        before = db.reads
        await asyncio.to_thread(emit, db, 3, 6)
        await settle()
        assert db.reads == before
        again = hub.follow(feed.Scope(WORKSPACE), after=after, keepalive=5)
        assert await take(again, 7) == [2, 3, 4, 5, 6, 7, 8]
        await again.aclose()


async def test_two_followers_each_get_every_event(db: CountingDatabase) -> None:
    async with running(db) as hub:
        await asyncio.to_thread(emit, db, 2)
        start = await hub.current_head()
        first = hub.follow(feed.Scope(WORKSPACE), after=start, keepalive=5)
        second = hub.follow(feed.Scope(WORKSPACE), after=start, keepalive=5)
        await asyncio.to_thread(emit, db, 3, 2)
        assert await take(first, 3) == [2, 3, 4]
        assert await take(second, 3) == [2, 3, 4]
        await first.aclose()
        await asyncio.to_thread(emit, db, 1, 5)
        assert await take(second, 1) == [5]
        await second.aclose()


async def test_a_follower_cancelled_as_the_log_moves_stops(db: CountingDatabase) -> None:
    """Python 3.11's ``asyncio.wait_for`` returns the result, and drops the cancellation, when
    the awaited wake-up completes in the same turn as the cancel (gh-86296): a dashboard
    terminal's revocation watch closed just as an event arrived kept following, so its socket
    handler never reached ``terminal.closed``. Each number of turns between the wake-up and the
    cancel is tried, so the one where both land together is among them."""

    async def follow_all(hub: EventHub, started: asyncio.Event) -> None:
        stream = hub.follow(feed.Scope(WORKSPACE), after=None, keepalive=30)
        async with contextlib.aclosing(stream):
            started.set()
            async for _ in stream:
                pass

    async with running(db) as hub:
        for turns in range(4):
            started = asyncio.Event()
            follower = asyncio.create_task(follow_all(hub, started))
            await started.wait()
            await asyncio.sleep(0.05)  # waiting for the log to move
            hub._notify()
            for _ in range(turns):
                await asyncio.sleep(0)
            follower.cancel()
            done, _ = await asyncio.wait({follower}, timeout=5)
            assert follower in done, f"still following after {turns} turns"
            assert follower.cancelled()
