"""kill -9 mid-burst: after a restart every change has exactly one event, nothing is half-done.

A real `trove-server serve` process takes concurrent uploads, /write calls, execs and
restores, and is SIGKILLed in the middle of them (with one exec certainly in flight). After
it is started again on the same data, the event log must account for what is on disk.
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from tests.contract.test_server_process import _keys, serve
from tests.support.server import make_data_dir
from trove_api.runtimes.local.spares import SPARES_DIR

WRITERS = 8
EXECUTORS = 3
ACKED_WRITES_BEFORE_KILL = 120
ACKED_RESTORES_BEFORE_KILL = 3


@dataclass
class Acked:
    lock: threading.Lock = field(default_factory=threading.Lock)
    writes: dict[str, int] = field(default_factory=dict)  # path -> size
    execs: list[str] = field(default_factory=list)  # marker names
    restores: list[str] = field(default_factory=list)  # snapshot ids, in order


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir()
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _database(data_dir: Path, url: str | None) -> Engine:
    return create_engine(url or f"sqlite:///{data_dir / 'trove.db'}")


def _events(engine: Engine, type_: str) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT data FROM events WHERE type = :t ORDER BY seq"), {"t": type_}).all()
    return [json.loads(row[0]) for row in rows]


def _intent_rows(engine: Engine) -> int:
    if not inspect(engine).has_table("intents"):
        return 0  # a server without intents (the code before them) has none to resolve
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM intents")).scalar_one())


def _bare(path: str) -> str:
    return path.removeprefix("workspace/")


def _client(base_url: str, key: str, namespace: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}", "X-Namespace": namespace},
        timeout=60,
    )


def _prepare_snapshots(base_url: str, key: str) -> dict[str, str]:
    """Two snapshots of namespace ``rs``, told apart by ``which``: snapshot id -> its content."""
    made = {}
    with _client(base_url, key, "rs") as client:
        for which in ("one", "two"):
            script = f"cd workspace && rm -rf * && echo {which} > which && mkdir d && "
            script += "for i in $(seq 1 300); do echo " + which + "$i > d/f$i; done"
            assert client.post("/v1/exec", json={"command": script}).json()["exit_code"] == 0
            snap = client.post("/v1/snapshots", json={"label": which})
            assert snap.status_code == 201, snap.text
            made[snap.json()["snapshot_id"]] = which
    return made


def _burst(
    base_url: str, key: str, snapshots: dict[str, str], acked: Acked, stop: threading.Event
) -> list[threading.Thread]:
    def writer(n: int) -> None:
        with _client(base_url, key, "burst") as client:
            for i in itertools.count():
                if stop.is_set():
                    return
                path = f"w/{n}-{i}.txt"
                content = f"writer {n} call {i} " + "x" * (i % 50)
                try:
                    if i % 2:
                        answer = client.put(f"/files/{path}", content=content.encode())
                    else:
                        answer = client.post("/write", json={"path": path, "content": content})
                except httpx.TransportError:
                    return
                if answer.status_code == 200:
                    with acked.lock:
                        acked.writes[path] = len(content.encode())

    def executor(n: int) -> None:
        with _client(base_url, key, "burst") as client:
            for i in itertools.count():
                if stop.is_set():
                    return
                marker = f"m-{n}-{i}"
                command = f"mkdir -p workspace/x && touch workspace/x/{marker} && echo ran"
                try:
                    answer = client.post("/v1/exec", json={"command": command})
                except httpx.TransportError:
                    return
                if answer.status_code == 200:
                    with acked.lock:
                        acked.execs.append(marker)

    def restorer() -> None:
        with _client(base_url, key, "rs") as client:
            for snapshot_id in itertools.cycle(list(snapshots)):
                if stop.is_set():
                    return
                try:
                    answer = client.post(f"/v1/snapshots/{snapshot_id}/restore")
                except httpx.TransportError:
                    return
                if answer.status_code == 200:
                    with acked.lock:
                        acked.restores.append(snapshot_id)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    threads += [threading.Thread(target=executor, args=(n,)) for n in range(EXECUTORS)]
    threads.append(threading.Thread(target=restorer))
    for thread in threads:
        thread.start()
    return threads


def _start_long_exec(base_url: str, key: str, data_dir: Path) -> threading.Thread:
    """An exec still running at the kill: it leaves a marker, then sleeps past the kill."""

    def run() -> None:
        with _client(base_url, key, "burst") as client, pytest.raises(httpx.TransportError):
            client.post(
                "/v1/exec", json={"command": "mkdir -p workspace/x && touch workspace/x/m-long && sleep 60"}
            )

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not list((data_dir / "namespaces").glob("*/burst/x/m-long")):
        assert time.monotonic() < deadline, "the long exec never started"
        time.sleep(0.02)
    return thread


def test_kill_9_mid_burst_loses_no_event_and_leaves_nothing_half_done(data_dir: Path) -> None:
    kill_mid_burst_and_check(data_dir)


def kill_mid_burst_and_check(data_dir: Path, database_url: str | None = None) -> None:
    """The scenario; ``database_url`` runs it on PostgreSQL (tests/scaleout) instead of SQLite."""
    env = {"TROVE_DATABASE_URL": database_url} if database_url else {}
    engine = _database(data_dir, database_url)
    try:
        _scenario(data_dir, env, engine)
    finally:
        engine.dispose()


def _scenario(data_dir: Path, env: dict[str, str], engine: Engine) -> None:
    acked = Acked()
    stop = threading.Event()
    with serve(data_dir, **env) as served:
        _, key = _keys(data_dir)
        snapshots = _prepare_snapshots(served.base_url, key)
        threads = _burst(served.base_url, key, snapshots, acked, stop)
        long_exec = _start_long_exec(served.base_url, key, data_dir)
        deadline = time.monotonic() + 240
        while (
            len(acked.writes) < ACKED_WRITES_BEFORE_KILL or len(acked.restores) < ACKED_RESTORES_BEFORE_KILL
        ):
            assert time.monotonic() < deadline, (
                f"the burst stalled: {len(acked.writes)} writes, {acked.restores}"
            )
            time.sleep(0.01)
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait(timeout=30)
        stop.set()
        for thread in [*threads, long_exec]:
            thread.join(timeout=60)

    with serve(data_dir, **env) as restarted:
        # Recovery runs in the sweep's first pass, right after start-up.
        deadline = time.monotonic() + 60
        while _intent_rows(engine):
            assert time.monotonic() < deadline, "intents left unresolved after the restart"
            time.sleep(0.1)
        # The one workspace's directory (beside it: the server's folder of spare sandboxes).
        (namespaces,) = [p for p in (data_dir / "namespaces").iterdir() if p.name != SPARES_DIR]
        with _client(restarted.base_url, key, "rs") as client:
            which = client.get("/files/which").text.strip()

    written = [e for e in _events(engine, "file.written")]
    written_paths = [_bare(str(e["path"])) for e in written]
    on_disk = {
        str(path.relative_to(namespaces / "burst")): path.stat().st_size
        for path in (namespaces / "burst" / "w").iterdir()
    }
    # Every file on disk: exactly one file.written, for its final size.
    orphans = sorted(p for p in on_disk if p not in written_paths)
    assert not orphans, f"{len(orphans)} files on disk without a file.written event: {orphans[:5]}"
    doubled = sorted(p for p in on_disk if written_paths.count(p) != 1)
    assert not doubled, doubled[:5]
    sizes = {_bare(str(e["path"])): e["size_bytes"] for e in written}
    assert {p: sizes[p] for p in on_disk} == on_disk
    # Every acknowledged write has its event (and is on disk).
    assert set(acked.writes) <= set(written_paths)
    assert all(on_disk[p] == size for p, size in acked.writes.items())

    # Every command that ran (its marker exists): exactly one exec.completed; the one killed
    # mid-run says so.
    commands = [str(e["command"]) for e in _events(engine, "exec.completed")]
    markers = [p.name for p in (namespaces / "burst" / "x").iterdir()]
    for marker in markers:
        assert sum(f"/{marker} " in c for c in commands) == 1, (
            f"exec {marker} ran but has {commands.count(marker)} events"
        )
    assert set(acked.execs) <= set(markers)
    interrupted = [e for e in _events(engine, "exec.completed") if e.get("interrupted")]
    assert any("m-long" in str(e["command"]) for e in interrupted)

    # Restores: every acknowledged one has its event, at most one more (swapped in, then the
    # kill), and the last event names the snapshot the namespace now holds.
    restored = [str(e["snapshot_id"]) for e in _events(engine, "snapshot.restored")]
    assert len(acked.restores) <= len(restored) <= len(acked.restores) + 1
    assert restored[: len(acked.restores)] == acked.restores
    assert snapshots[restored[-1]] == which

    # Nothing half-done left behind.
    assert list((data_dir / "staging").iterdir()) == []
    assert list((data_dir / "snapshots" / ".tmp").iterdir()) == []
