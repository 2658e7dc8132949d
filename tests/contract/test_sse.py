"""The SSE stream `trove webhooks listen` reads (E23, WIRE.md 3.6, 7.44)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from trove_sdk import verify_webhook

from tests.support.receiver import Receiver, run_receiver
from tests.support.sdk import admin, cli_env, client
from tests.support.server import LiveServer, start_server
from trove_api.services.keys import create_workspace


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with start_server(sse_keepalive_s=0.3) as server:
        yield server


class Stream:
    """One open SSE connection; raw messages (text between blank lines) arrive in a queue."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.messages: queue.Queue[str] = queue.Queue()
        self.raw: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        buffer = ""
        try:
            for chunk in self.response.iter_text():
                self.raw.append(chunk)
                buffer += chunk
                while "\n\n" in buffer:
                    message, buffer = buffer.split("\n\n", 1)
                    self.messages.put(message)
        except httpx.HTTPError:
            pass

    def next_event(self, timeout: float = 20) -> dict[str, Any]:
        """The next message carrying data (comments skipped)."""
        while True:
            try:
                message = self.messages.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no SSE event arrived") from None
            data = [line[6:] for line in message.split("\n") if line.startswith("data: ")]
            if data:
                assert len(data) == 1
                event: dict[str, Any] = json.loads(data[0])
                return event

    def next_of(self, type_: str, timeout: float = 20) -> dict[str, Any]:
        while True:
            event = self.next_event(timeout)
            if event["type"] == type_:
                return event


@contextmanager
def open_stream(live: LiveServer, key: str | None = None, **kwargs: Any) -> Iterator[Stream]:
    headers = {"Authorization": f"Bearer {key or live.admin_key}", **kwargs.pop("headers", {})}
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=None)) as http,
        http.stream(
            "GET",
            f"{live.base_url}/v1/workspaces/{live.workspace_id}/webhooks/stream",
            headers=headers,
            **kwargs,
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


def test_framing_connected_first_then_live_event(live: LiveServer, namespace: str) -> None:
    with open_stream(live) as stream:
        hello = stream.next_event()
        assert hello["type"] == "connected"
        with client(live, namespace) as trove:
            trove.write("workspace/live.txt", "abc")
        event = stream.next_of("file.written")
        assert event["data"] == {"path": "workspace/live.txt", "size_bytes": 3}
        assert event["namespace"] == namespace
        text = "".join(stream.raw)
        assert "\r" not in text
        assert f"id: {event['id']}\n" in text


def test_keepalive_comment_when_idle(live: LiveServer) -> None:
    with open_stream(live) as stream:
        stream.next_event()
        comment = stream.messages.get(timeout=10)
        assert comment == ": ping"


def test_resume_with_last_event_id(live: LiveServer, namespace: str) -> None:
    with client(live, namespace) as trove:
        for i in range(3):
            trove.write(f"workspace/r{i}.txt", "x")
    listed = httpx.get(
        f"{live.base_url}/v1/workspaces/{live.workspace_id}/events",
        params={"namespace": namespace, "types": "file.written"},
        headers={"Authorization": f"Bearer {live.admin_key}"},
    ).json()["events"]
    first_id = listed[-1]["id"]
    with open_stream(
        live, params={"namespace": namespace, "types": "file.written"}, headers={"Last-Event-ID": first_id}
    ) as stream:
        assert stream.next_event()["type"] == "connected"
        replayed = [stream.next_event()["data"]["path"] for _ in range(2)]
        assert replayed == ["workspace/r1.txt", "workspace/r2.txt"]


def test_locked_key_stream_sees_only_its_namespace(live: LiveServer, namespace: str) -> None:
    with admin(live) as a:
        locked = a.create_key("stream-reader", namespace=namespace).api_key
    forbidden = httpx.get(
        f"{live.base_url}/v1/workspaces/{live.workspace_id}/webhooks/stream",
        params={"namespace": "elsewhere"},
        headers={"Authorization": f"Bearer {locked}"},
    )
    assert forbidden.status_code == 403
    with open_stream(live, key=locked) as stream:
        stream.next_event()
        with client(live, namespace + "-other") as trove:
            trove.write("workspace/hidden.txt", "x")
        with client(live, namespace) as trove:
            trove.write("workspace/visible.txt", "x")
        event = stream.next_event()
        while event["type"] != "file.written":
            assert event["namespace"] == namespace
            event = stream.next_event()
        assert event["data"]["path"] == "workspace/visible.txt"
        assert event["namespace"] == namespace


def test_many_subscribers_each_get_the_event(live: LiveServer, namespace: str) -> None:
    count = 20
    with httpx.Client(timeout=httpx.Timeout(10, read=None)) as http:
        responses = []
        streams = []
        try:
            for _ in range(count):
                cm = http.stream(
                    "GET",
                    f"{live.base_url}/v1/workspaces/{live.workspace_id}/webhooks/stream",
                    params={"namespace": namespace, "types": "file.written"},
                    headers={"Authorization": f"Bearer {live.admin_key}"},
                )
                responses.append(cm)
                streams.append(Stream(cm.__enter__()))
            for stream in streams:
                assert stream.next_event()["type"] == "connected"
            with client(live, namespace) as trove:
                trove.write("workspace/fan.txt", "x")
            ids = {stream.next_event()["id"] for stream in streams}
            assert len(ids) == 1
        finally:
            for cm in responses:
                cm.__exit__(None, None, None)


def test_cli_listen_forwards_signed_events(live: LiveServer, namespace: str, tmp_path: Path) -> None:
    secret = "trove-whsec-local-test-secret"
    with run_receiver() as receiver:
        proc = _listen(live, tmp_path, receiver, secret)
        try:
            connected_line = proc.stdout.readline() if proc.stdout else ""
            assert "connected to workspace" in connected_line
            # Writes until one arrives: the stream may attach just after the first write.
            with client(live, namespace) as trove:
                for i in range(50):
                    trove.write(f"workspace/fwd{i}.txt", "x")
                    if receiver.of_type("file.written"):
                        break
                    receiver_wait(receiver)
            receiver.wait_for(lambda rs: any(r.headers["x-trove-event"] == "file.written" for r in rs))
            req = receiver.of_type("file.written")[0]
            event = verify_webhook(
                secret=secret, body=req.body, signature_header=req.headers["x-trove-signature"]
            )
            assert event.namespace == namespace
            assert event.data["path"].startswith("workspace/fwd")
            assert req.headers["x-trove-event-id"] == event.id
            assert not receiver.of_type("connected")
        finally:
            proc.terminate()
            proc.communicate(timeout=10)


def receiver_wait(receiver: Receiver) -> None:
    with suppress(AssertionError):
        receiver.wait_for(lambda rs: bool(rs), timeout=0.5)


def _listen(live: LiveServer, home: Path, receiver: Receiver, secret: str) -> subprocess.Popen[str]:
    env = cli_env(live, home, api_key=live.admin_key)
    trove = Path(sys.executable).with_name("trove")
    return subprocess.Popen(
        [str(trove), "webhooks", "listen", "--forward-to", receiver.url, "--secret", secret],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_stream_never_carries_another_workspaces_events(live: LiveServer, namespace: str) -> None:
    other = create_workspace(live.ctx.db, "sse-other")
    with open_stream(live) as stream:
        assert stream.next_event()["type"] == "connected"
        with client(live, namespace, api_key=other.workspace_key.api_key) as foreign:
            foreign.write("workspace/foreign.txt", "not yours")
        with client(live, namespace) as trove:
            trove.write("workspace/mine.txt", "yours")
        event = stream.next_of("file.written")
    assert event["workspace_id"] == live.workspace_id
    assert event["data"]["path"] == "workspace/mine.txt"
