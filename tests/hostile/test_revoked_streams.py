"""A revoked key's open SSE stream ends; other keys' streams go on (issue 14 item 7).

Real server, keys minted and revoked through the official admin client, streams read by httpx.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.support.sdk import admin, client
from tests.support.server import LiveServer, start_server
from trove_api.stores.tables import api_keys
from trove_core.clock import now_ts

WAIT_S = 30  # upper bound for a wait, never a speed assertion


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with start_server(sse_keepalive_s=0.3) as server:
        yield server


class Stream:
    """An open stream: its messages arrive in a queue; ``ended`` is set when the server ends it."""

    def __init__(self, response: httpx.Response) -> None:
        self.messages: queue.Queue[str] = queue.Queue()
        self.ended = threading.Event()
        self._response = response
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        buffer = ""
        try:
            for chunk in self._response.iter_text():
                buffer += chunk
                while "\n\n" in buffer:
                    message, buffer = buffer.split("\n\n", 1)
                    self.messages.put(message)
        except httpx.HTTPError:
            return  # closed by the test itself
        self.ended.set()

    def events(self) -> list[dict[str, Any]]:
        found = []
        while not self.messages.empty():
            message = self.messages.get()
            found += [json.loads(line[6:]) for line in message.split("\n") if line.startswith("data: ")]
        return found

    def wait_for(self, type_: str) -> dict[str, Any]:
        while True:
            message = self.messages.get(timeout=WAIT_S)
            for line in message.split("\n"):
                if line.startswith("data: ") and json.loads(line[6:])["type"] == type_:
                    event: dict[str, Any] = json.loads(line[6:])
                    return event


@contextmanager
def open_stream(live: LiveServer, key: str) -> Iterator[Stream]:
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=None)) as http,
        http.stream(
            "GET",
            f"{live.base_url}/v1/workspaces/{live.workspace_id}/webhooks/stream",
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        assert response.status_code == 200
        stream = Stream(response)
        stream.wait_for("connected")
        yield stream


def _mint(live: LiveServer, name: str, namespace: str | None = None) -> tuple[str, str]:
    with admin(live) as adm:
        created = adm.create_key(name, namespace=namespace)
    return created.key_id, created.api_key


def _revoke(live: LiveServer, key_id: str) -> None:
    with admin(live) as adm:
        adm.revoke_key(key_id)


def test_revoking_a_key_ends_its_stream_and_only_its_stream(live: LiveServer, namespace: str) -> None:
    doomed_id, doomed = _mint(live, "doomed-reader")
    _, survivor = _mint(live, "surviving-reader")
    _, locked = _mint(live, "locked-reader", namespace=namespace)
    with (
        open_stream(live, doomed) as doomed_stream,
        open_stream(live, survivor) as survivor_stream,
        open_stream(live, locked) as locked_stream,
    ):
        _revoke(live, doomed_id)
        assert doomed_stream.ended.wait(WAIT_S), "the revoked key's stream is still open"
        assert not any(e["type"] == "key.revoked" for e in doomed_stream.events())
        with client(live, namespace) as trove:
            trove.write("workspace/after.txt", "x")
        assert survivor_stream.wait_for("file.written")["namespace"] == namespace
        assert locked_stream.wait_for("file.written")["namespace"] == namespace
        assert not survivor_stream.ended.is_set()
        assert not locked_stream.ended.is_set()
    # The revoked key cannot open a new one either.
    answer = httpx.get(
        f"{live.base_url}/v1/workspaces/{live.workspace_id}/webhooks/stream",
        headers={"Authorization": f"Bearer {doomed}"},
    )
    assert answer.status_code == 401


def test_a_namespace_locked_keys_stream_ends_although_it_never_sees_key_events(
    live: LiveServer, namespace: str
) -> None:
    locked_id, locked = _mint(live, "locked-doomed", namespace=namespace)
    _, neighbour = _mint(live, "locked-neighbour", namespace=namespace)
    with open_stream(live, locked) as stream, open_stream(live, neighbour) as other:
        _revoke(live, locked_id)
        assert stream.ended.wait(WAIT_S), "the revoked locked key's stream is still open"
        with client(live, namespace) as trove:
            trove.write("workspace/still.txt", "x")
        assert other.wait_for("file.written")["data"]["path"] == "workspace/still.txt"
        assert not other.ended.is_set()


def test_a_key_revoked_without_an_event_is_caught_at_the_next_keepalive(live: LiveServer) -> None:
    # No API path revokes without recording key.revoked; an operator editing the database
    # does, and that is the case the keep-alive re-check covers.
    key_id, key = _mint(live, "db-revoked")
    with open_stream(live, key) as stream:
        with live.ctx.db.write() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now_ts()))
        assert stream.ended.wait(WAIT_S), "the stream outlived its key's revocation"
