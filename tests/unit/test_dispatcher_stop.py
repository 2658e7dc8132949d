"""A dispatcher stopped while its claim is committing hands the claimed rows back.

CI caught the cause (test_delivery_pending_across_restart): the stop cancelled the loop while
its claim ran in a thread; the claim still committed, its rows kept their lease, and the
restarted server could not retry them for the lease's 40 s. Real SQLite; the claim is held at
the database's write lock so the stop lands exactly then.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sqlalchemy import insert, select

from trove_api.events.dispatcher import Dispatcher
from trove_api.events.log import SYSTEM, record
from trove_api.stores.db import Database
from trove_api.stores.tables import webhook_deliveries, webhooks, workspaces
from trove_core.settings import Settings


class HeldClaim(Dispatcher):
    """Signals when a claim starts and when it has committed."""

    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(db, settings)
        self.entered = threading.Event()
        self.committed = threading.Event()

    def _claim_due(self, limit: int) -> list[str]:
        self.entered.set()
        try:
            return super()._claim_due(limit)
        finally:
            self.committed.set()


def _one_pending_delivery(db: Database) -> str:
    with db.write() as conn:
        conn.execute(insert(workspaces).values(id="ws-1", name="w", created_at="2026-01-01T00:00:00Z"))
        conn.execute(
            insert(webhooks).values(
                id="wh-1",
                workspace_id="ws-1",
                url="http://127.0.0.1:9/hook",
                events='["*"]',
                secret="s",
                enabled=True,
                created_at="2026-01-01T00:00:00Z",
            )
        )
        record(conn, workspace_id="ws-1", namespace="a", type_="file.written", actor=SYSTEM, data={})
    with db.read() as conn:
        return str(conn.execute(select(webhook_deliveries.c.id)).scalar_one())


def _lease(db: Database, delivery_id: str) -> float | None:
    with db.read() as conn:
        found = conn.execute(
            select(webhook_deliveries.c.claimed_until).where(webhook_deliveries.c.id == delivery_id)
        ).scalar_one()
    return None if found is None else float(found)


def test_a_stop_during_the_claim_leaves_no_lease(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    db.migrate()
    delivery_id = _one_pending_delivery(db)
    dispatcher = HeldClaim(db, Settings(data_dir=tmp_path / "data", webhook_allow_private=True))

    async def scenario() -> None:
        db._write_lock.acquire()  # the claim's thread waits here
        try:
            await dispatcher.start()
            assert await asyncio.to_thread(dispatcher.entered.wait, 10), "the dispatcher never claimed"
            closing = asyncio.create_task(dispatcher.aclose())
            await asyncio.sleep(0.2)  # the stop has cancelled the loop by now
        finally:
            db._write_lock.release()
        await closing
        assert await asyncio.to_thread(dispatcher.committed.wait, 10), "the claim never finished"

    try:
        asyncio.run(scenario())
        assert _lease(db, delivery_id) is None
    finally:
        db.dispose()
