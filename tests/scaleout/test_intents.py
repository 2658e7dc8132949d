"""Intents on PostgreSQL: only a dead replica's are recovered, and by one replica only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from trove_api.events.log import Actor
from trove_api.runtimes.local.runtime import LocalRuntime
from trove_api.runtimes.local.sandbox import Limits
from trove_api.services import intents as kinds
from trove_api.services.intents import IntentLog
from trove_api.services.namespace_locks import NamespaceLocks
from trove_api.services.namespaces import NamespaceService
from trove_api.services.recovery import Recovery
from trove_api.stores.db import Database
from trove_api.stores.snapshots.directory import DirectorySnapshotStore
from trove_api.stores.tables import events, intents

ACTOR = Actor(key_id="key-1", key_name="agent")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    made = Database(database_url)
    made.migrate()
    yield made
    made.dispose()


def _replica(db: Database, tmp_path: Path, name: str) -> tuple[IntentLog, Recovery]:
    runtime = LocalRuntime(
        tmp_path / name,
        sandbox=False,
        network=False,
        uid_base=100000,
        limits=Limits(60, 1 << 20, 64, None),
        memory_bytes=1 << 30,
    )
    log = IntentLog(db)
    store = DirectorySnapshotStore(tmp_path / name / "snapshots")
    recovery = Recovery(
        db, log, runtime, store, NamespaceService(db, runtime, 100000), NamespaceLocks(db.session_locks)
    )
    return log, recovery


def _exec_events(db: Database, namespace: str) -> list[dict[str, object]]:
    with db.read() as conn:
        rows = conn.execute(
            select(events.c.data).where(events.c.namespace == namespace, events.c.type == "exec.completed")
        )
        return [json.loads(row[0]) for row in rows]


def _open_intents(db: Database, owner: str) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(intents).where(intents.c.owner == owner)
            ).scalar_one()
        )


async def test_a_live_replicas_intents_are_left_alone_and_a_dead_ones_recovered_once(
    db: Database, tmp_path: Path
) -> None:
    live, _ = _replica(db, tmp_path, "live")
    dead, _ = _replica(db, tmp_path, "dead")
    _, recovering_one = _replica(db, tmp_path, "one")
    _, recovering_two = _replica(db, tmp_path, "two")
    await live.begin(
        "ws-pg", "live-ns", kinds.EXEC, ACTOR, {"data": {"command": "sleep 60", "exit_code": None}}
    )
    # The dead replica's exec: begun (which took its owner lock), then the process died.
    await dead.begin("ws-pg", "dead-ns", kinds.EXEC, ACTOR, {"data": {"command": "make", "exit_code": None}})
    await dead.aclose()
    # Two replicas sweep at once: the dead one's intent yields one event between them.
    await asyncio.gather(recovering_one.run(), recovering_two.run())
    assert _open_intents(db, dead.owner) == 0
    assert _exec_events(db, "dead-ns") == [{"command": "make", "exit_code": None, "interrupted": True}]
    # The live replica's exec is still running: no event, its intent stays.
    assert _open_intents(db, live.owner) == 1
    assert _exec_events(db, "live-ns") == []
    # That replica dies too (its owner lock goes with its session): now it is recovered.
    await live.aclose()
    await recovering_one.run()
    assert _open_intents(db, live.owner) == 0
    assert len(_exec_events(db, "live-ns")) == 1
