"""A receiver cannot hold a delivery or the server's memory: bounded read, overall deadline.

Fault tests with a real receiver (tests/support/receiver.py) that answers with an endless
body, or trickles its body a byte at a time, against a real server delivering through
`POST /webhooks/{id}/test` (the official admin client's `test_webhook`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.receiver import ENDLESS_CAP, run_receiver
from tests.support.sdk import admin
from tests.support.server import LiveServer, start_server

DEADLINE_S = 1.0
WAIT_S = 30  # an upper bound for a wait, never a speed assertion


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with start_server(webhook_allow_private=True, webhook_timeout_s=DEADLINE_S) as server:
        yield server


def _excerpts(live: LiveServer, hook: str) -> list[str | None]:
    def get(path: str) -> dict[str, Any]:
        answer = httpx.get(
            f"{live.base_url}/v1/workspaces/{live.workspace_id}/webhooks/{hook}/deliveries{path}",
            headers={"Authorization": f"Bearer {live.admin_key}"},
            timeout=WAIT_S,
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    return [
        attempt["response_excerpt"]
        for delivery in get("")["deliveries"]
        for attempt in get("/" + delivery["delivery_id"])["attempt_log"]
    ]


def test_an_endless_answer_is_read_only_a_few_kilobytes(live: LiveServer) -> None:
    with run_receiver() as receiver:
        receiver.body = "endless"
        with admin(live) as adm:
            hook = adm.create_webhook(receiver.url).webhook_id
            result = adm.test_webhook(hook)
        assert (result.ok, result.status) == (True, 200)
        assert receiver.hung_up.wait(WAIT_S), "the server kept the endless answer open"
        # The server stopped after a few KB; the receiver only filled socket buffers.
        assert receiver.sent_bytes < ENDLESS_CAP // 4, receiver.sent_bytes
    excerpts = _excerpts(live, hook)
    assert excerpts
    assert all(e is not None and e.startswith("xxx") and len(e) <= 512 for e in excerpts)


def test_a_trickling_answer_is_cut_at_the_delivery_deadline(live: LiveServer) -> None:
    with run_receiver() as receiver:
        receiver.body = "trickle"  # a byte every 50 ms: no single read ever times out
        with admin(live) as adm:
            hook = adm.create_webhook(receiver.url).webhook_id
            result = adm.test_webhook(hook)
        assert result.ok is False
        assert result.status is None
        assert "longer than" in str(result.error)
        assert receiver.hung_up.wait(WAIT_S), "the trickling connection stayed open"
