"""Session advisory locks: exclusion across connections, release on cancellation (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.postgres import dsn_of
from trove_api.stores.advisory import NAMESPACE, SessionLocks, lock_key

KEY = lock_key(NAMESPACE, "ws-test", "ns")


@pytest.fixture
def locks(database_url: str) -> Iterator[SessionLocks]:
    # Two instances: two "replicas" with their own pools.
    made = SessionLocks(database_url)
    yield made
    made.dispose()


def _advisory_locks(database_url: str) -> int:
    with psycopg.connect(dsn_of(database_url)) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    assert row is not None
    return int(row[0])


async def test_shared_holders_coexist_and_exclude_an_exclusive_one(
    locks: SessionLocks, database_url: str
) -> None:
    other = SessionLocks(database_url)
    try:
        async with locks.hold(KEY, shared=True), other.hold(KEY, shared=True):
            waiter = asyncio.create_task(_hold_briefly(other, shared=False))
            done, _ = await asyncio.wait({waiter}, timeout=0.5)
            assert not done, "an exclusive lock was granted beside shared holders"
        await asyncio.wait_for(waiter, 30)
    finally:
        other.dispose()
    assert _advisory_locks(database_url) == 0


async def _hold_briefly(locks: SessionLocks, *, shared: bool) -> None:
    async with locks.hold(KEY, shared=shared):
        await asyncio.sleep(0)


async def test_a_cancelled_wait_leaves_no_lock_behind(locks: SessionLocks, database_url: str) -> None:
    other = SessionLocks(database_url)
    try:
        async with locks.hold(KEY, shared=False):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(_hold_briefly(other, shared=True), 0.3)
        # The abandoned waiter's connection is gone; an exclusive lock is free again.
        await asyncio.wait_for(_hold_briefly(other, shared=False), 30)
    finally:
        other.dispose()
    for _ in range(100):
        if _advisory_locks(database_url) == 0:
            break
        await asyncio.sleep(0.05)
    assert _advisory_locks(database_url) == 0


async def test_cancelling_a_holder_releases_its_lock(locks: SessionLocks, database_url: str) -> None:
    entered = asyncio.Event()

    async def holder() -> None:
        async with locks.hold(KEY, shared=False):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(holder())
    await asyncio.wait_for(entered.wait(), 30)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    other = SessionLocks(database_url)
    try:
        await asyncio.wait_for(_hold_briefly(other, shared=False), 30)
    finally:
        other.dispose()
    assert _advisory_locks(database_url) == 0
