"""Intents on SQLite: a live process's are left alone (its flock), a dead one's are resolved."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from trove_api.events.log import Actor
from trove_api.runtimes.local.runtime import LocalRuntime
from trove_api.runtimes.local.sandbox import Limits
from trove_api.services import intents as kinds
from trove_api.services.auth import Caller
from trove_api.services.events import EventEmitter
from trove_api.services.files import FileService
from trove_api.services.intents import IntentLog
from trove_api.services.keys import create_workspace
from trove_api.services.namespace_locks import NamespaceLocks
from trove_api.services.namespaces import NamespaceService
from trove_api.services.recovery import Recovery
from trove_api.services.snapshots import SnapshotService
from trove_api.stores.db import Database
from trove_api.stores.snapshots.directory import DirectorySnapshotStore
from trove_api.stores.tables import events, intents
from trove_core.errors import SnapshotNotFoundError

ACTOR = Actor(key_id="key-1", key_name="agent")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    made = Database(f"sqlite:///{tmp_path / 'trove.db'}")
    made.migrate()
    yield made
    made.dispose()


@pytest.fixture
async def make_recovery(
    db: Database, tmp_path: Path
) -> AsyncIterator[Callable[[DirectorySnapshotStore], Recovery]]:
    """Recovery over a local runtime; the runtimes are closed after the test (their warm
    sandboxes stopped, as at a server's shutdown)."""
    made: list[LocalRuntime] = []

    def make(store: DirectorySnapshotStore) -> Recovery:
        runtime = LocalRuntime(
            tmp_path / "data",
            sandbox=False,
            network=False,
            uid_base=100000,
            limits=Limits(60, 1 << 20, 64, None),
            memory_bytes=1 << 30,
        )
        made.append(runtime)
        namespaces = NamespaceService(db, runtime, 100000)
        return Recovery(db, IntentLog(db), runtime, store, namespaces, NamespaceLocks())

    yield make
    for runtime in made:
        await runtime.aclose()


def _count(db: Database, owner: str) -> int:
    with db.read() as conn:
        query = select(func.count()).select_from(intents).where(intents.c.owner == owner)
        return int(conn.execute(query).scalar_one())


def _events(db: Database, type_: str) -> list[dict[str, object]]:
    with db.read() as conn:
        rows = conn.execute(select(events.c.data).where(events.c.type == type_))
        return [json.loads(row[0]) for row in rows]


async def test_a_live_processs_intents_stay_and_a_dead_ones_are_resolved(
    db: Database, tmp_path: Path, make_recovery: Callable[[DirectorySnapshotStore], Recovery]
) -> None:
    recovery = make_recovery(DirectorySnapshotStore(tmp_path / "snapshots"))
    live, dead = IntentLog(db), IntentLog(db)
    await live.begin("ws-1", "a", kinds.EXEC, ACTOR, {"data": {"command": "sleep 60"}})
    await dead.begin("ws-1", "b", kinds.EXEC, ACTOR, {"data": {"command": "make"}})
    await dead.aclose()  # its flock goes, as when the process dies
    assert await recovery.run() == 1
    assert _count(db, dead.owner) == 0
    assert _count(db, live.owner) == 1
    assert _events(db, "exec.completed") == [{"command": "make", "interrupted": True}]
    await live.aclose()
    assert await recovery.run() == 1
    assert _count(db, live.owner) == 0


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_snapshot_killed_before_its_row_leaves_no_tarball(
    db: Database, tmp_path: Path, make_recovery: Callable[[DirectorySnapshotStore], Recovery]
) -> None:
    store = DirectorySnapshotStore(tmp_path / "snapshots")
    recovery = make_recovery(store)
    dead = IntentLog(db)
    key = "ws-1/a/snap-0123456789abcdef.tar.gz"
    await dead.begin("ws-1", "a", kinds.SNAPSHOT_CREATE, ACTOR, {"storage_key": key})
    await store.put(key, _one(b"a tarball nobody will list"))
    await dead.aclose()
    assert await recovery.run() == 1
    with pytest.raises(SnapshotNotFoundError):
        await store.open(key)
    assert _events(db, "snapshot.created") == []


async def test_a_restore_killed_after_its_swap_gets_its_event_and_one_before_it_none(
    db: Database, tmp_path: Path, make_recovery: Callable[[DirectorySnapshotStore], Recovery]
) -> None:
    ws = create_workspace(db, "test").workspace_id
    store = DirectorySnapshotStore(tmp_path / "snapshots")
    recovery = make_recovery(store)
    runtime, namespaces = recovery.runtime, recovery.namespaces
    emitter = EventEmitter(db)
    locks, intents = NamespaceLocks(), IntentLog(db)
    snapshots = SnapshotService(db, runtime, store, namespaces, emitter, locks, intents)
    files = FileService(
        runtime,
        namespaces,
        emitter,
        write_max_bytes=1 << 20,
        upload_max_bytes=1 << 20,
        locks=locks,
        intents=intents,
    )
    caller = Caller(key_id="key-1", key_name="agent", workspace_id=ws, scope="workspace", namespace=None)
    await files.write_text(caller, "a", "which", "one")
    snap = await snapshots.create(ws, "a", None, ACTOR)
    await files.write_text(caller, "a", "which", "two")
    ns = await namespaces.find(ws, "a")
    assert ns is not None

    async def killed_restore(swapped: bool) -> None:
        dead = IntentLog(db)
        payload = {"snapshot_id": snap.snapshot_id, "data": {"snapshot_id": snap.snapshot_id}}
        await dead.begin(ws, "a", kinds.SNAPSHOT_RESTORE, ACTOR, payload)
        if swapped:
            reader = await store.open(snap.storage_key)
            await runtime.import_tar(ns, reader.chunks())
            await reader.aclose()
        await dead.aclose()
        assert await recovery.run() == 1

    await killed_restore(swapped=False)
    assert _events(db, "snapshot.restored") == []
    await killed_restore(swapped=True)
    assert _events(db, "snapshot.restored") == [{"snapshot_id": snap.snapshot_id, "files_restored": 1}]
