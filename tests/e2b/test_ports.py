"""``get_host``: HTTP and WebSocket to a server a command started in the sandbox, through Trove only.

The server is ``python3 -m http.server`` and a standard-library echo server written into the
sandbox (``PORT_SERVER``); clients are httpx and ``websockets`` from the test. Path-style calls
name the sandbox and port in headers (``E2B_SANDBOX_URL``); host-style calls use the name
``get_host`` returns under ``E2B_DOMAIN`` (sent as the Host header: no DNS in tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2b import WAIT_S
from tests.support.sdk import admin
from tests.support.server import LiveServer, start_server
from trove_api.e2b import ports
from trove_api.services.keys import create_workspace

PORT_SERVER = (Path(__file__).parent / "port_server.py").read_text()


def _free_port() -> int:
    # High and random: the port is the sandbox's, but a direct connect from here must find nothing.
    return random.randint(20000, 60000)


def _headers(sbx: Sandbox, port: int) -> dict[str, str]:
    return {
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "E2b-Sandbox-Port": str(port),
        "E2b-Traffic-Access-Token": str(sbx.traffic_access_token),
    }


def _wait_listening(url: str, headers: dict[str, str]) -> None:
    """Until the background server accepts (polled: how long it takes is not the point)."""
    for _ in range(400):
        if httpx.get(url, headers=headers, timeout=WAIT_S).status_code != 502:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing came to listen behind {url}")


@pytest.fixture
def echo(sbx: Sandbox, e2b_env: LiveServer) -> Iterator[int]:
    """The echo server's port, listening."""
    port = _free_port()
    sbx.files.write("port_server.py", PORT_SERVER)
    server = sbx.commands.run(f"python3 port_server.py {port}", background=True)
    _wait_listening(f"{e2b_env.base_url}/e2b/headers", _headers(sbx, port))
    yield port
    server.kill()  # its output stream closed before the sandbox goes


def test_http_server_through_get_host_path_style(sbx: Sandbox, e2b_env: LiveServer) -> None:
    port = _free_port()
    sbx.files.write("hello.txt", "from inside")
    big = os.urandom(3 * 1024 * 1024)  # several flow-control windows
    sbx.files.write("big.bin", big)
    server = sbx.commands.run(f"python3 -m http.server {port} --bind 127.0.0.1", background=True)
    url = f"{e2b_env.base_url}/e2b"
    _wait_listening(f"{url}/hello.txt", _headers(sbx, port))
    r = httpx.get(f"{url}/hello.txt", headers=_headers(sbx, port), timeout=WAIT_S)
    assert r.status_code == 200
    assert r.text == "from inside"
    assert httpx.get(f"{url}/big.bin", headers=_headers(sbx, port), timeout=WAIT_S).content == big
    # The workspace key opens it too, as it opens the sandbox.
    by_key = {
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "E2b-Sandbox-Port": str(port),
        "X-API-KEY": e2b_env.workspace_key,
    }
    assert httpx.get(f"{url}/hello.txt", headers=by_key, timeout=WAIT_S).text == "from inside"
    assert httpx.get(f"{url}/missing", headers=_headers(sbx, port), timeout=WAIT_S).status_code == 404
    server.kill()


def test_request_bodies_stream_in_and_credentials_stay_out(
    sbx: Sandbox, echo: int, e2b_env: LiveServer
) -> None:
    url = f"{e2b_env.base_url}/e2b"
    body = os.urandom(3 * 1024 * 1024)
    r = httpx.post(f"{url}/sink", content=body, headers=_headers(sbx, echo), timeout=60)
    assert r.status_code == 200, r.text
    assert r.text == hashlib.sha256(body).hexdigest()
    pieces = (body[i : i + 100_000] for i in range(0, len(body), 100_000))  # no length: chunked
    streamed = httpx.post(f"{url}/sink", content=pieces, headers=_headers(sbx, echo), timeout=60)
    assert streamed.text == hashlib.sha256(body).hexdigest()
    seen = httpx.get(
        f"{url}/headers?q=1", headers=_headers(sbx, echo) | {"X-Mine": "kept"}, timeout=WAIT_S
    ).json()
    assert seen["path"] == "/headers?q=1"
    assert seen["x-mine"] == "kept"
    for secret in ("e2b-traffic-access-token", "x-api-key", "x-access-token", "e2b-sandbox-id"):
        assert secret not in seen


def test_websocket_echo(sbx: Sandbox, echo: int, e2b_env: LiveServer) -> None:
    ws_url = e2b_env.base_url.replace("http://", "ws://") + "/e2b/echo"
    with connect(ws_url, additional_headers=_headers(sbx, echo), subprotocols=["echo.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "echo.v1"
        ws.send("hello")
        assert ws.recv() == "hello"
        payload = os.urandom(300_000)
        ws.send(payload)
        assert ws.recv() == payload
    assert ws.close_code == 1000


def test_nothing_listening_is_a_502(sbx: Sandbox, e2b_env: LiveServer) -> None:
    r = httpx.get(f"{e2b_env.base_url}/e2b/", headers=_headers(sbx, _free_port()), timeout=WAIT_S)
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "sandbox_port_closed"


def test_a_server_hanging_up_without_an_answer_is_a_502(sbx: Sandbox, echo: int, e2b_env: LiveServer) -> None:
    r = httpx.get(f"{e2b_env.base_url}/e2b/hang-up", headers=_headers(sbx, echo), timeout=WAIT_S)
    assert r.status_code == 502
    assert r.json()["code"] == "sandbox_port_closed"
    # The server is still there for the next request.
    assert (
        httpx.get(f"{e2b_env.base_url}/e2b/headers", headers=_headers(sbx, echo), timeout=WAIT_S).status_code
        == 200
    )


def test_port_is_reached_only_through_trove_and_only_with_its_sandbox_credentials(
    sbx: Sandbox, echo: int, e2b_env: LiveServer
) -> None:
    url = f"{e2b_env.base_url}/e2b/headers"
    route = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(echo)}
    # Not published on the host: only the sandbox's own loopback has it.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", echo), timeout=5):
        pass
    assert httpx.get(url, headers=route, timeout=WAIT_S).status_code == 401
    assert (
        httpx.get(url, headers=route | {"E2b-Traffic-Access-Token": "nope"}, timeout=WAIT_S).status_code
        == 401
    )
    other = Sandbox.create()
    try:
        # Another sandbox's token, and a key locked to another sandbox.
        assert (
            httpx.get(
                url,
                headers=route | {"E2b-Traffic-Access-Token": str(other.traffic_access_token)},
                timeout=WAIT_S,
            ).status_code
            == 401
        )
        with_token = route | {"X-Access-Token": str(Sandbox.connect(other.sandbox_id)._envd_access_token)}
        assert httpx.get(url, headers=with_token, timeout=WAIT_S).status_code == 401
        with admin(e2b_env) as adm:
            locked = adm.create_key("locked", namespace=other.sandbox_id).api_key
        assert httpx.get(url, headers=route | {"X-API-KEY": locked}, timeout=WAIT_S).status_code == 403
    finally:
        other.kill()
    # Another tenant's workspace key: no such sandbox there.
    stranger = create_workspace(e2b_env.ctx.db, "stranger").workspace_key.api_key
    assert httpx.get(url, headers=route | {"X-API-KEY": stranger}, timeout=WAIT_S).status_code == 404
    assert httpx.get(url, headers=route | {"X-API-KEY": e2b_env.admin_key}, timeout=WAIT_S).status_code == 403
    ws_url = e2b_env.base_url.replace("http://", "ws://") + "/e2b/echo"
    with pytest.raises(InvalidStatus):
        connect(ws_url, additional_headers=route | {"X-API-KEY": stranger}).close()


@pytest.fixture(scope="module")
def domain_server() -> Iterator[LiveServer]:
    with start_server(e2b_domain="e2b.example.test") as live:
        yield live


def test_host_style_get_host(domain_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2B_API_URL", f"{domain_server.base_url}/e2b")
    monkeypatch.setenv("E2B_SANDBOX_URL", f"{domain_server.base_url}/e2b")
    monkeypatch.setenv("E2B_API_KEY", domain_server.workspace_key)
    monkeypatch.setenv("E2B_DOMAIN", "e2b.example.test")
    sbx = Sandbox.create()
    try:
        port = _free_port()
        sbx.files.write("port_server.py", PORT_SERVER)
        server = sbx.commands.run(f"python3 port_server.py {port}", background=True)
        host = sbx.get_host(port)
        assert host == f"{port}-{sbx.sandbox_id}.e2b.example.test"
        token = {"E2b-Traffic-Access-Token": str(sbx.traffic_access_token), "Host": host}
        _wait_listening(f"{domain_server.base_url}/headers", token)
        seen = httpx.get(f"{domain_server.base_url}/headers", headers=token, timeout=WAIT_S).json()
        assert seen["path"] == "/headers"
        assert seen["host"] == host
        # The client names the host (as it would with DNS) but connects to the test server.
        trove = socket.create_connection(("127.0.0.1", int(domain_server.base_url.rsplit(":", 1)[1])))
        traffic = {"E2b-Traffic-Access-Token": str(sbx.traffic_access_token)}
        with connect(f"ws://{host}/echo", sock=trove, additional_headers=traffic) as ws:
            ws.send(json.dumps({"n": 1}))
            assert json.loads(ws.recv()) == {"n": 1}
        server.kill()
    finally:
        sbx.kill()


def test_open_connections_per_sandbox_are_capped(
    sbx: Sandbox, echo: int, e2b_env: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ports, "MAX_OPEN_PER_SANDBOX", 1)
    url = f"{e2b_env.base_url}/e2b/headers"
    ws_url = e2b_env.base_url.replace("http://", "ws://") + "/e2b/echo"
    with connect(ws_url, additional_headers=_headers(sbx, echo)) as ws:
        ws.send("held open")
        assert ws.recv() == "held open"
        busy = httpx.get(url, headers=_headers(sbx, echo), timeout=WAIT_S)
        assert busy.status_code == 429
        assert busy.json()["code"] == "rate_limited"
    # Closed on the client's side: the count goes down once the relay has ended (polled).
    for _ in range(200):
        if httpx.get(url, headers=_headers(sbx, echo), timeout=WAIT_S).status_code == 200:
            break
        time.sleep(0.05)
    assert httpx.get(url, headers=_headers(sbx, echo), timeout=WAIT_S).status_code == 200


async def test_async_sdk_get_host_and_traffic_token(e2b_env: LiveServer) -> None:
    sbx = await AsyncSandbox.create()
    try:
        port = _free_port()
        server = await sbx.commands.run(f"python3 -m http.server {port} --bind 127.0.0.1", background=True)
        assert sbx.get_host(port) == f"{port}-{sbx.sandbox_id}.{sbx.sandbox_domain}"
        headers = {
            "E2b-Sandbox-Id": sbx.sandbox_id,
            "E2b-Sandbox-Port": str(port),
            "E2b-Traffic-Access-Token": str(sbx.traffic_access_token),
        }
        async with httpx.AsyncClient(
            base_url=f"{e2b_env.base_url}/e2b", headers=headers, timeout=WAIT_S
        ) as http:
            for _ in range(400):
                if (listing := await http.get("/")).status_code != 502:
                    break
                await asyncio.sleep(0.05)
            assert listing.status_code == 200
            assert "Directory listing" in listing.text
        await server.kill()
    finally:
        await sbx.kill()
