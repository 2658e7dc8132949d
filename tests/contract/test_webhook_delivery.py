"""Webhook delivery from the durable queue to real receivers, verified by the official verify_webhook."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from trove_sdk import WebhookSignatureError, verify_webhook

from tests.support.receiver import Received, Receiver, run_receiver, wait_until
from tests.support.sdk import admin, client
from tests.support.server import LiveServer, make_data_dir, start_server

FAST = {
    "webhook_allow_private": True,
    "webhook_backoff_base_s": 0.2,
    "webhook_backoff_max_s": 2.0,
    "webhook_poll_interval_s": 0.2,
    "webhook_max_attempts": 3,
}


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with start_server(**FAST) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver() as rcv:
        yield rcv


def _hook(live: LiveServer, url: str, **kwargs: Any) -> tuple[str, str]:
    with admin(live) as a:
        created = a.create_webhook(url, **kwargs)
    return created.webhook_id, created.signing_secret


def _api(live: LiveServer, method: str, path: str) -> httpx.Response:
    return httpx.request(
        method,
        f"{live.base_url}/v1/workspaces/{live.workspace_id}{path}",
        headers={"Authorization": f"Bearer {live.admin_key}"},
        timeout=30,
    )


def _written(path: str) -> Any:
    def check(reqs: list[Received]) -> bool:
        return any(json.loads(r.body)["data"].get("path") == path for r in reqs)

    return check


def test_write_delivery_verifies_with_official_client(
    live: LiveServer, receiver: Receiver, namespace: str
) -> None:
    hook_id, secret = _hook(live, receiver.url, events=["file.written"])
    with client(live, namespace) as trove:
        trove.write("workspace/sig.txt", "hello")
    [req] = [r for r in receiver.wait_for(_written("workspace/sig.txt"))]
    event = verify_webhook(secret=secret, body=req.body, signature_header=req.headers["x-trove-signature"])
    assert event.type == "file.written"
    assert event.namespace == namespace
    assert event.data == {"path": "workspace/sig.txt", "size_bytes": 5}
    assert req.headers["x-trove-event"] == "file.written"
    assert req.headers["x-trove-event-id"] == event.id
    assert req.headers["content-type"] == "application/json"
    envelope = json.loads(req.body)
    assert set(envelope) == {
        "id",
        "type",
        "api_version",
        "workspace_id",
        "namespace",
        "created_at",
        "actor",
        "data",
    }
    assert envelope["actor"]["key_name"] == "workspace"
    # The same bytes, tampered or with another secret, are refused.
    with pytest.raises(WebhookSignatureError):
        verify_webhook(
            secret=secret,
            body=req.body.replace(b"hello", b"HELLO").replace(b"5", b"6"),
            signature_header=req.headers["x-trove-signature"],
        )
    with pytest.raises(WebhookSignatureError):
        verify_webhook(secret=secret + "x", body=req.body, signature_header=req.headers["x-trove-signature"])
    _api(live, "DELETE", f"/webhooks/{hook_id}")


def test_namespace_filter_and_star(live: LiveServer, namespace: str) -> None:
    other = namespace + "-other"
    with run_receiver() as only_ns, run_receiver() as everything:
        ns_hook, _ = _hook(live, only_ns.url, namespace=namespace)
        star_hook, _ = _hook(live, everything.url, events=["*"])
        with client(live, other) as trove:
            trove.write("workspace/other.txt", "x")
        with client(live, namespace) as trove:
            trove.write("workspace/mine.txt", "x")
            trove.exec("echo hi")
        everything.wait_for(_written("workspace/mine.txt"))
        everything.wait_for(lambda reqs: any(r.headers["x-trove-event"] == "exec.completed" for r in reqs))
        only_ns.wait_for(lambda reqs: any(r.headers["x-trove-event"] == "exec.completed" for r in reqs))
        # "*" took every type, including namespace.created of both namespaces.
        star_types = {
            (json.loads(r.body)["namespace"], r.headers["x-trove-event"]) for r in everything.requests
        }
        assert {
            (other, "file.written"),
            (namespace, "file.written"),
            (namespace, "exec.completed"),
            (other, "namespace.created"),
        } <= star_types
        assert {json.loads(r.body)["namespace"] for r in only_ns.requests} == {namespace}
        for hook in (ns_hook, star_hook):
            _api(live, "DELETE", f"/webhooks/{hook}")


def test_type_filter(live: LiveServer, receiver: Receiver, namespace: str) -> None:
    hook, _ = _hook(live, receiver.url, events=["file.deleted"], namespace=namespace)
    with client(live, namespace) as trove:
        trove.write("workspace/d.txt", "x")
        trove.delete("workspace/d.txt")
    reqs = receiver.wait_for(lambda rs: len(rs) >= 1)
    assert [r.headers["x-trove-event"] for r in reqs] == ["file.deleted"]
    _api(live, "DELETE", f"/webhooks/{hook}")


def test_receiver_failing_twice_then_succeeding(live: LiveServer, receiver: Receiver, namespace: str) -> None:
    receiver.script = [(500, {}), (503, {"Retry-After": "0"})]
    hook, secret = _hook(live, receiver.url, events=["file.written"], namespace=namespace)
    with client(live, namespace) as trove:
        trove.write("workspace/retry.txt", "x")
    reqs = receiver.wait_for(lambda rs: len(rs) >= 3)
    assert len({r.body for r in reqs}) == 1, "every attempt carries the same event"
    assert len({r.headers["x-trove-event-id"] for r in reqs}) == 1
    verify_webhook(secret=secret, body=reqs[2].body, signature_header=reqs[2].headers["x-trove-signature"])

    def delivered() -> Any:
        rows = _api(live, "GET", f"/webhooks/{hook}/deliveries").json()["deliveries"]
        return rows if rows and rows[0]["status"] == "delivered" else None

    [row] = wait_until(delivered, what="delivered status")  # type: ignore[misc]
    assert row["attempts"] == 3
    detail = _api(live, "GET", f"/webhooks/{hook}/deliveries/{row['delivery_id']}").json()
    assert [a["status_code"] for a in detail["attempt_log"]] == [500, 503, 200]
    assert [a["attempt"] for a in detail["attempt_log"]] == [1, 2, 3]
    listed = _api(live, "GET", "/webhooks").json()["webhooks"]
    mine = next(w for w in listed if w["webhook_id"] == hook)
    assert (mine["last_delivery_ok"], mine["last_delivery_status"]) == (True, 200)
    _api(live, "DELETE", f"/webhooks/{hook}")


def test_attempt_cap_then_manual_retry(live: LiveServer, namespace: str) -> None:
    with run_receiver(default=500) as receiver:
        hook, _ = _hook(live, receiver.url, events=["file.written"], namespace=namespace)
        with client(live, namespace) as trove:
            trove.write("workspace/cap.txt", "x")

        def failed() -> Any:
            rows = _api(live, "GET", f"/webhooks/{hook}/deliveries").json()["deliveries"]
            return rows if rows and rows[0]["status"] == "failed" else None

        [row] = wait_until(failed, what="failed status")  # type: ignore[misc]
        assert row["attempts"] == FAST["webhook_max_attempts"]
        assert len(receiver.requests) == FAST["webhook_max_attempts"]
        receiver.default = 200
        retried = _api(live, "POST", f"/webhooks/{hook}/deliveries/{row['delivery_id']}/retry")
        assert retried.status_code == 200
        assert retried.json()["status"] == "pending"
        receiver.wait_for(lambda rs: len(rs) == FAST["webhook_max_attempts"] + 1)
        wait_until(
            lambda: (
                _api(live, "GET", f"/webhooks/{hook}/deliveries").json()["deliveries"][0]["status"]
                == "delivered"
            ),
            what="redelivered",
        )
        missing = _api(live, "POST", f"/webhooks/{hook}/deliveries/dlv-nope/retry")
        assert missing.status_code == 404
        _api(live, "DELETE", f"/webhooks/{hook}")


def test_client_error_is_not_retried(live: LiveServer, namespace: str) -> None:
    with run_receiver(default=400) as receiver:
        hook, _ = _hook(live, receiver.url, events=["file.written"], namespace=namespace)
        with client(live, namespace) as trove:
            trove.write("workspace/bad.txt", "x")
        wait_until(
            lambda: (
                _api(live, "GET", f"/webhooks/{hook}/deliveries").json()["deliveries"][0]["status"]
                == "failed"
            ),
            what="failed",
        )
        assert len(receiver.requests) == 1
        _api(live, "DELETE", f"/webhooks/{hook}")


def test_rotated_secret_signs_new_deliveries(live: LiveServer, receiver: Receiver, namespace: str) -> None:
    hook, old = _hook(live, receiver.url, events=["file.written"], namespace=namespace)
    rotated = _api(live, "POST", f"/webhooks/{hook}/rotate-secret").json()
    new = rotated["signing_secret"]
    assert new.startswith("trove-whsec-")
    assert new != old
    with client(live, namespace) as trove:
        trove.write("workspace/rot.txt", "x")
    [req] = receiver.wait_for(_written("workspace/rot.txt"))
    verify_webhook(secret=new, body=req.body, signature_header=req.headers["x-trove-signature"])
    with pytest.raises(WebhookSignatureError):
        verify_webhook(secret=old, body=req.body, signature_header=req.headers["x-trove-signature"])
    _api(live, "DELETE", f"/webhooks/{hook}")


def test_deleted_hook_gets_nothing_more(live: LiveServer, receiver: Receiver, namespace: str) -> None:
    hook, _ = _hook(live, receiver.url, namespace=namespace)
    assert _api(live, "DELETE", f"/webhooks/{hook}").status_code == 200
    with client(live, namespace) as trove:
        trove.write("workspace/after.txt", "x")
    # A second hook proves deliveries for this write went out, so the first would have had time.
    with run_receiver() as witness:
        hook2, _ = _hook(live, witness.url, namespace=namespace)
        with client(live, namespace) as trove:
            trove.write("workspace/after2.txt", "x")
        witness.wait_for(_written("workspace/after2.txt"))
        _api(live, "DELETE", f"/webhooks/{hook2}")
    assert receiver.requests == []


def test_delivery_pending_across_restart(receiver: Receiver, namespace: str) -> None:
    """Stop the server while the receiver is failing; a new server on the same data delivers."""
    data_dir = make_data_dir()
    receiver.default = 503
    try:
        with start_server(data_dir=data_dir, **{**FAST, "webhook_max_attempts": 50}) as first:
            hook, secret = _hook(first, receiver.url, events=["file.written"], namespace=namespace)
            with client(first, namespace) as trove:
                trove.write("workspace/durable.txt", "x")
            receiver.wait_for(lambda rs: len(rs) >= 1)
        attempts_before = len(receiver.requests)
        receiver.default = 200
        with start_server(data_dir=data_dir, **FAST) as second:
            reqs = receiver.wait_for(lambda rs: len(rs) > attempts_before)
            verify_webhook(
                secret=secret, body=reqs[-1].body, signature_header=reqs[-1].headers["x-trove-signature"]
            )
            assert json.loads(reqs[-1].body)["data"]["path"] == "workspace/durable.txt"
            url = f"{second.base_url}/v1/workspaces/{first.workspace_id}/webhooks/{hook}/deliveries"
            headers = {"Authorization": f"Bearer {first.admin_key}"}
            wait_until(
                lambda: httpx.get(url, headers=headers).json()["deliveries"][0]["status"] == "delivered",
                what="delivered after restart",
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# -- the seed's receivers, running as real apps ---------------------------------------------


class _Uvicorn(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        pass


def _serve_asgi(app: Any) -> tuple[_Uvicorn, threading.Thread, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = _Uvicorn(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="receiver start")
    return server, thread, f"http://127.0.0.1:{port}"


def test_seed_fastapi_receiver(live: LiveServer, namespace: str) -> None:
    seen: list[Any] = []
    secret_box: dict[str, str] = {}
    app = FastAPI()

    # Seed 001 "Verify signatures", verbatim apart from where the secret comes from.
    @app.post("/trove-events")
    async def receive(request: Request) -> dict[str, bool]:
        body = await request.body()  # must be raw bytes — do not parse first
        try:
            event = verify_webhook(
                secret=secret_box["secret"],
                body=body,
                signature_header=request.headers["x-trove-signature"],
            )
        except WebhookSignatureError:
            raise HTTPException(status_code=400, detail="Bad signature") from None
        seen.append(event)
        return {"ok": True}

    server, thread, base = _serve_asgi(app)
    try:
        hook, secret_box["secret"] = _hook(live, f"{base}/trove-events", namespace=namespace)
        with admin(live) as a:
            result = a.test_webhook(hook)
        assert result.ok
        assert result.status == 200
        assert result.event_id.startswith("evt-")
        with client(live, namespace) as trove:
            trove.write("workspace/fastapi.txt", "x")
        wait_until(lambda: any(e.type == "file.written" for e in seen), what="fastapi receiver")
        assert {e.type for e in seen} >= {"webhook.test", "file.written"}
        _api(live, "DELETE", f"/webhooks/{hook}")
    finally:
        server.should_exit = True
        thread.join(10)


def test_seed_flask_receiver(live: LiveServer, namespace: str) -> None:
    from flask import Flask, abort, request
    from werkzeug.serving import make_server

    seen: list[Any] = []
    secret_box: dict[str, str] = {}
    app = Flask(__name__)

    # Seed 000 "Receive an event (Flask)".
    @app.post("/trove/events")
    def receive() -> tuple[str, int]:
        try:
            event = verify_webhook(
                secret=secret_box["secret"],
                body=request.get_data(),  # raw bytes — DO NOT use request.json
                signature_header=request.headers["X-Trove-Signature"],
            )
        except WebhookSignatureError:
            abort(400)
        seen.append(event)
        return "", 204

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/trove/events"
        hook, secret_box["secret"] = _hook(live, url, events=["file.written", "exec.completed"])
        with client(live, namespace) as trove:
            trove.write("workspace/flask.txt", "x")
            trove.exec("echo flask")
        wait_until(
            lambda: {e.type for e in seen} >= {"file.written", "exec.completed"}, what="flask receiver"
        )
        execd = next(e for e in seen if e.type == "exec.completed")
        assert execd.data["command"] == "echo flask"
        assert execd.data["exit_code"] == 0
        assert execd.data["stdout"] == "flask\n"
        # A forged delivery is refused by the seed's receiver.
        forged = httpx.post(url, content=b'{"id":"evt-x"}', headers={"X-Trove-Signature": "t=1,v1=00"})
        assert forged.status_code == 400
        _api(live, "DELETE", f"/webhooks/{hook}")
    finally:
        httpd.shutdown()
        thread.join(10)
