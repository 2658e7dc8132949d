"""The SSE hub does not skip an event whose transaction commits after a later-numbered one."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from trove_sdk import TroveClient

from tests.support.replicas import Replica, Replicas, start_replicas
from trove_api.events.log import SYSTEM, record


@pytest.fixture(scope="module")
def replicas(database_url: str) -> Iterator[Replicas]:
    # Short keep-alives: a replica notices closed streams quickly and stops without waiting.
    with start_replicas(database_url, 2, TROVE_SSE_KEEPALIVE_S="0.5") as started:
        yield started


class Stream:
    def __init__(self, response: httpx.Response) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, args=(response,), daemon=True).start()

    def _pump(self, response: httpx.Response) -> None:
        try:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    self.events.put(json.loads(line[6:]))
        except httpx.HTTPError:
            pass

    def next_event(self, timeout: float = 30) -> dict[str, Any]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no SSE event arrived") from None


@contextmanager
def open_stream(replica: Replica, workspace_id: str, key: str) -> Iterator[Stream]:
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=None)) as http,
        http.stream(
            "GET",
            f"{replica.base_url}/v1/workspaces/{workspace_id}/webhooks/stream",
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        assert response.status_code == 200
        stream = Stream(response)
        assert stream.next_event()["type"] == "connected"
        yield stream


def _second_workspace(replicas: Replicas) -> tuple[str, str]:
    serve = Path(sys.executable).with_name("trove-server")
    done = subprocess.run(
        [str(serve), "bootstrap", "--name", "other"],
        env=replicas.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    workspace = re.search(r"Trove workspace: (\S+)", done.stdout)
    admin = re.search(r"Admin key[^:]*: (\S+)", done.stdout)
    assert workspace, done.stdout
    assert admin, done.stdout
    return workspace.group(1), admin.group(1)


def test_live_stream_gets_an_event_that_commits_late(replicas: Replicas) -> None:
    other_ws, other_admin = _second_workspace(replicas)
    engine = create_engine(replicas.database_url)
    try:
        with (
            open_stream(replicas[0], other_ws, other_admin) as late_stream,
            open_stream(replicas[0], replicas.workspace_id, replicas.admin_key) as main_stream,
        ):
            with engine.connect() as conn:
                transaction = conn.begin()
                # Its seq is drawn now; it commits only after a later seq (below) has committed.
                late = record(
                    conn,
                    workspace_id=other_ws,
                    namespace=None,
                    type_="key.created",
                    actor=SYSTEM,
                    data={"late": True},
                )
                with TroveClient(
                    api_key=replicas.workspace_key, namespace="late", base_url=replicas[1].base_url
                ) as trove:
                    trove.write("workspace/early.txt", "x")
                # Several hub polls on replica 0 see the later event while this one is in flight
                # (a hub that jumped its head past it would never deliver it).
                time.sleep(1.5)
                transaction.commit()
            # "From now" is the replica's view of the log: the bootstrap's own events, committed
            # by another process just before the stream opened, may still come first.
            first = late_stream.next_event()
            while first["type"] in {"workspace.created", "key.created"} and "late" not in first["data"]:
                first = late_stream.next_event()
            assert first["id"] == late["id"]
            seen = [main_stream.next_event()["type"] for _ in range(2)]
            assert seen == ["namespace.created", "file.written"]
    finally:
        engine.dispose()
