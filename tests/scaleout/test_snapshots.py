"""Snapshots across replicas: one daily run, restore excludes execs on the other replica."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
from trove_sdk import TroveClient

from tests.support.postgres import dsn_of
from tests.support.replicas import Replica, Replicas
from trove_api.stores.advisory import NAMESPACE, SessionLocks, lock_key

SERVE = str(Path(sys.executable).with_name("trove-server"))


def _client(replicas: Replicas, replica: Replica, namespace: str) -> TroveClient:
    return TroveClient(api_key=replicas.workspace_key, namespace=namespace, base_url=replica.base_url)


def test_daily_job_started_on_two_replicas_at_once_runs_once(replicas: Replicas) -> None:
    changed = [f"daily-{i}-{secrets.token_hex(3)}" for i in range(3)]
    for i, namespace in enumerate(changed):
        with _client(replicas, replicas[i % 2], namespace) as trove:
            trove.write("workspace/a.txt", namespace)
    day = "2031-01-0" + str(1 + secrets.randbelow(9))
    runs = [
        subprocess.Popen(
            [SERVE, "snapshots", "run-daily", "--day", day],
            env=replicas.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    summaries = sorted(out.splitlines()[0] for out, _ in outputs)
    assert summaries == [
        f"snapshots.daily {day}: 3 snapshot(s) created",
        f"snapshots.daily {day}: already done",
    ], outputs
    with psycopg.connect(dsn_of(replicas.database_url)) as conn:
        rows = conn.execute(
            "SELECT namespace FROM snapshots WHERE kind = 'auto' AND label = %s", (f"auto-daily-{day}",)
        ).fetchall()
        claims = conn.execute(
            "SELECT count(*) FROM job_runs WHERE job = 'snapshots.daily' AND run_key = %s", (day,)
        ).fetchone()
    assert sorted(row[0] for row in rows) == sorted(changed)
    assert claims == (1,)


def test_exec_on_one_replica_waits_for_an_exclusive_lock_taken_elsewhere(replicas: Replicas) -> None:
    """What a restore on another replica holds: an exec here must not run meanwhile."""
    namespace = "held-" + secrets.token_hex(4)
    with _client(replicas, replicas[1], namespace) as trove:
        trove.write("workspace/ready.txt", "x")
    locks = SessionLocks(replicas.database_url)
    held = asyncio.Event()
    release = threading.Event()

    async def hold() -> None:
        async with locks.hold(lock_key(NAMESPACE, replicas.workspace_id, namespace), shared=False):
            held.set()
            await asyncio.to_thread(release.wait)

    def run_holder() -> None:
        asyncio.run(hold())

    holder = threading.Thread(target=run_holder)
    holder.start()
    try:
        with ThreadPoolExecutor(1) as pool, _client(replicas, replicas[1], namespace) as trove:
            # Wait (bounded) until the lock is ours, then start an exec on a replica.
            deadline = time.monotonic() + 30
            while not held.is_set():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            running = pool.submit(trove.exec, "echo ran > workspace/ran.txt")
            time.sleep(1.0)  # ample time for an exec that (wrongly) did not wait
            with _client(replicas, replicas[0], namespace) as reader:
                # Listing takes no namespace lock, so it answers while the exec waits.
                assert "workspace/ran.txt" not in {entry.path for entry in reader.list_dir("workspace/")}
            assert not running.done()
            release.set()
            running.result(timeout=60)
            assert trove.read_text("workspace/ran.txt") == "ran\n"
    finally:
        release.set()
        holder.join(timeout=30)
        locks.dispose()


def test_restore_on_one_replica_never_shows_execs_on_the_other_a_half_tree(replicas: Replicas) -> None:
    namespace = "swap-" + secrets.token_hex(4)
    states = {"A": 40, "B": 70}
    snapshot_of: dict[str, str] = {}
    with _client(replicas, replicas[0], namespace) as trove:
        for marker, files in states.items():
            trove.exec(
                f"rm -rf workspace/d && mkdir -p workspace/d && "
                f"for i in $(seq {files}); do echo $i > workspace/d/f$i; done && "
                f"echo {marker} > workspace/marker"
            )
            snapshot_of[marker] = trove.create_snapshot(label=f"state-{marker}").snapshot_id
    # Reads the marker before and after counting: a restore in between would show.
    probe = (
        "m1=$(cat workspace/marker); n=$(ls workspace/d | wc -l); sleep 0.02; "
        "m2=$(cat workspace/marker); echo $m1 $n $m2"
    )
    stop = threading.Event()
    seen: list[str] = []

    def hammer() -> None:
        with _client(replicas, replicas[1], namespace) as trove:
            while not stop.is_set():
                seen.append(trove.exec(probe).strip())

    with ThreadPoolExecutor(2) as pool:
        hammers = [pool.submit(hammer) for _ in range(2)]
        try:
            with _client(replicas, replicas[0], namespace) as trove:
                for round_ in range(6):
                    marker = "A" if round_ % 2 == 0 else "B"
                    assert trove.restore_snapshot(snapshot_of[marker]) == states[marker] + 1
        finally:
            stop.set()
        for future in hammers:
            future.result(timeout=120)
    assert seen, "the execs never ran"
    allowed = {f"{marker} {files} {marker}" for marker, files in states.items()}
    assert set(seen) <= allowed, sorted(set(seen) - allowed)


def test_replicas_answer_health_after_the_lock_tests(replicas: Replicas) -> None:
    for replica in replicas.replicas:
        assert httpx.get(f"{replica.base_url}/readyz", timeout=5).status_code == 200
