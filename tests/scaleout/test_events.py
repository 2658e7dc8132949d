"""Events with writes spread over two replicas: ordered, unique, tailed once, delivered once."""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from trove_sdk import TroveAdminClient, TroveClient

from tests.support.postgres import dsn_of
from tests.support.receiver import run_receiver, wait_until
from tests.support.replicas import Replica, Replicas
from trove_core.clock import now_ts

WORKERS = 4
OPS_PER_WORKER = 12


@pytest.fixture
def namespace() -> str:
    return "so-" + secrets.token_hex(5)


def _client(replicas: Replicas, replica: Replica, namespace: str) -> TroveClient:
    return TroveClient(api_key=replicas.workspace_key, namespace=namespace, base_url=replica.base_url)


def _spread_load(replicas: Replicas, namespace: str) -> int:
    """Writes and execs round-robin over the replicas from several threads; returns the count."""
    start = threading.Barrier(WORKERS)

    def worker(w: int) -> None:
        clients = [_client(replicas, replica, namespace) for replica in replicas.replicas]
        try:
            start.wait()
            for i in range(OPS_PER_WORKER):
                trove = clients[(w + i) % len(clients)]
                if i % 3 == 2:
                    trove.exec(f"echo {w}-{i} > workspace/e{w}-{i}.txt")
                else:
                    trove.write(f"workspace/w{w}-{i}.txt", f"{w}-{i}")
        finally:
            for trove in clients:
                trove.close()

    with ThreadPoolExecutor(WORKERS) as pool:
        for future in [pool.submit(worker, w) for w in range(WORKERS)]:
            future.result()
    return WORKERS * OPS_PER_WORKER


def _stored_events(replicas: Replicas, namespace: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn_of(replicas.database_url)) as conn:
        rows = conn.execute(
            "SELECT id, created_at FROM events WHERE workspace_id = %s AND namespace = %s ORDER BY seq",
            (replicas.workspace_id, namespace),
        ).fetchall()
    return [(str(row[0]), str(row[1])) for row in rows]


class Tail:
    """The official `trove tail --json` as a subprocess; its stdout lines land in a queue."""

    def __init__(self, replicas: Replicas, replica: Replica, home: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TROVE_")}
        env.update(
            HOME=str(home),
            TROVE_API_KEY=replicas.workspace_key,
            TROVE_WORKSPACE_ID=replicas.workspace_id,
            TROVE_BASE_URL=replica.base_url,
            NO_COLOR="1",
        )
        trove = Path(sys.executable).with_name("trove")
        self.proc = subprocess.Popen(
            [str(trove), "tail", "--json", "--interval", "0.2", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def until(self, last_path: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Every event printed up to and including the file.written of ``last_path``."""
        out: list[dict[str, Any]] = []
        while True:
            try:
                event = json.loads(self.lines.get(timeout=timeout))
            except queue.Empty:
                raise AssertionError(f"tail printed {len(out)} events, never {last_path}") from None
            out.append(event)
            if event["type"] == "file.written" and event["data"].get("path") == last_path:
                return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)


@pytest.fixture
def tail_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Tail] = []

    def make(replicas: Replicas, replica: Replica, *args: str) -> Tail:
        tail = Tail(replicas, replica, tmp_path, *args)
        started.append(tail)
        return tail

    yield make
    for tail in started:
        tail.stop()


def test_tail_on_one_replica_prints_every_event_once(
    replicas: Replicas, namespace: str, tail_factory: Any
) -> None:
    tail = tail_factory(replicas, replicas[0], "--namespace", namespace, "--since", now_ts())
    ops = _spread_load(replicas, namespace)
    with _client(replicas, replicas[1], namespace) as trove:
        trove.write("workspace/sentinel.txt", "end")
    printed = tail.until("workspace/sentinel.txt")

    stored = _stored_events(replicas, namespace)
    assert len(stored) == ops + 2  # namespace.created, the load, the sentinel
    # created_at is unique and increases with seq in the workspace, whichever replica wrote.
    stamps = [created_at for _, created_at in stored]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    ids = [event["id"] for event in printed]
    assert Counter(ids).most_common(1)[0][1] == 1, "an event was printed twice"
    assert ids == [event_id for event_id, _ in stored], "tail missed or reordered events"


def test_webhook_deliveries_once_per_event_with_both_dispatchers(replicas: Replicas, namespace: str) -> None:
    with (
        run_receiver() as receiver,
        TroveAdminClient(
            api_key=replicas.admin_key, workspace_id=replicas.workspace_id, base_url=replicas[0].base_url
        ) as admin,
    ):
        hook = admin.create_webhook(receiver.url, events=["*"], namespace=namespace)
        try:
            ops = _spread_load(replicas, namespace)
            with _client(replicas, replicas[0], namespace) as trove:
                trove.write("workspace/sentinel.txt", "end")
            expected = {event_id for event_id, _ in _stored_events(replicas, namespace)}
            assert len(expected) == ops + 2
            received = receiver.wait_for(
                lambda got: expected <= {r.headers.get("x-trove-event-id") for r in got}
            )

            def all_settled() -> bool:
                with psycopg.connect(dsn_of(replicas.database_url)) as conn:
                    pending = conn.execute(
                        "SELECT count(*) FROM webhook_deliveries "
                        "WHERE webhook_id = %s AND status <> 'delivered'",
                        (hook.webhook_id,),
                    ).fetchone()
                return pending == (0,)

            wait_until(all_settled, what="every delivery marked delivered")
            received = list(receiver.requests)
        finally:
            admin.delete_webhook(hook.webhook_id)
    counts = Counter(r.headers.get("x-trove-event-id") for r in received)
    assert set(counts) == expected
    assert max(counts.values()) == 1, "an event was delivered more than once"
    with psycopg.connect(dsn_of(replicas.database_url)) as conn:
        attempts = conn.execute(
            "SELECT d.id, count(a.id) FROM webhook_deliveries d "
            "JOIN webhook_attempts a ON a.delivery_id = d.id WHERE d.webhook_id = %s GROUP BY d.id",
            (hook.webhook_id,),
        ).fetchall()
    assert len(attempts) == len(expected)
    assert {count for _, count in attempts} == {1}, "one attempt per delivery, not one per replica"
