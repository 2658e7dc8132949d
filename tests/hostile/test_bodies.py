"""Oversize bodies are refused with 413 and the limit; broken uploads leave nothing behind."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.hostile.helpers import KIB, LIMITS, assert_problem, ns_dir, temp_files
from tests.support.server import LiveServer

WRITE_MAX = LIMITS["write_max_bytes"]
UPLOAD_MAX = LIMITS["upload_max_bytes"]
JSON_MAX = LIMITS["json_body_max_bytes"]


def _chunks(total: int, size: int = 16 * KIB) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"z" * piece


def _wait_until(predicate: object, seconds: float = 15) -> bool:
    """Poll a condition (state settles asynchronously after a disconnect); no timing asserted."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(predicate())  # type: ignore[operator]


def test_write_over_the_cap_is_413_with_the_limit(
    api: httpx.Client, hostile: LiveServer, namespace: str
) -> None:
    body = assert_problem(
        api.post("/write", json={"path": "big.txt", "content": "x" * (WRITE_MAX + 1)}),
        413,
        "payload_too_large",
    )
    assert str(WRITE_MAX) in str(body["detail"])
    # Multibyte: the cap counts UTF-8 bytes, not characters.
    assert_problem(api.post("/write", json={"path": "big.txt", "content": "é" * (WRITE_MAX // 2 + 1)}), 413)
    assert api.post("/write", json={"path": "ok.txt", "content": "x" * WRITE_MAX}).status_code == 200
    assert not (ns_dir(hostile, namespace) / "big.txt").exists()


def test_upload_over_the_cap_with_content_length_is_413(
    api: httpx.Client, hostile: LiveServer, namespace: str
) -> None:
    body = assert_problem(
        api.put("/files/big.bin", content=b"z" * (UPLOAD_MAX + 1)), 413, "payload_too_large"
    )
    assert str(UPLOAD_MAX) in str(body["detail"])
    assert api.put("/files/ok.bin", content=b"z" * UPLOAD_MAX).status_code == 200
    assert not (ns_dir(hostile, namespace) / "big.bin").exists()
    assert temp_files(hostile) == []


def test_upload_over_the_cap_streamed_without_length_is_413(
    api: httpx.Client, hostile: LiveServer, namespace: str
) -> None:
    request = api.build_request("PUT", "/files/stream.bin", content=_chunks(UPLOAD_MAX + 64 * KIB))
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    body = assert_problem(api.send(request), 413, "payload_too_large")
    assert str(UPLOAD_MAX) in str(body["detail"])
    assert not (ns_dir(hostile, namespace) / "stream.bin").exists()
    assert _wait_until(lambda: temp_files(hostile) == [])
    # A streamed upload under the cap works.
    ok = api.send(api.build_request("PUT", "/files/stream-ok.bin", content=_chunks(UPLOAD_MAX)))
    assert ok.status_code == 200
    assert ok.json()["size_bytes"] == UPLOAD_MAX


def test_declared_length_over_the_cap_is_refused_before_the_body(hostile: LiveServer, namespace: str) -> None:
    # Declare a huge body, send none of it: the answer must come without waiting for it.
    for target, declared in ((f"/files/huge-{namespace}.bin", 10 * UPLOAD_MAX), ("/write", 10 * JSON_MAX)):
        method = "PUT" if target.startswith("/files") else "POST"
        status, head, body = _raw_exchange(
            hostile, namespace, method, target, declared, b"", half_close=False
        )
        assert status == 413, (head, body)
        assert b"application/problem+json" in head.lower()


@pytest.mark.parametrize("route", ["/v1/exec", "/write", "/delete", "/exec"])
def test_json_body_over_the_cap_is_413(api: httpx.Client, route: str) -> None:
    payload = {"command": "x" * (JSON_MAX + 1), "path": "x", "content": "y"}
    body = assert_problem(api.post(route, json=payload), 413, "payload_too_large")
    assert str(JSON_MAX) in str(body["detail"])


@pytest.mark.parametrize("route", ["/v1/exec", "/write"])
def test_json_body_over_the_cap_streamed_without_length_is_413(api: httpx.Client, route: str) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"command": "'
        yield from _chunks(JSON_MAX + 64 * KIB)
        yield b'", "path": "x", "content": "y"}'

    request = api.build_request("POST", route, content=body(), headers={"Content-Type": "application/json"})
    assert "content-length" not in request.headers
    response = api.send(request)
    payload = assert_problem(response, 413, "payload_too_large")
    assert str(JSON_MAX) in str(payload["detail"])


def test_client_disconnect_mid_upload_leaves_no_partial_file(hostile: LiveServer, namespace: str) -> None:
    # Make the namespace exist, so the upload gets as far as streaming to disk.
    with httpx.Client(
        base_url=hostile.base_url,
        headers={"Authorization": f"Bearer {hostile.workspace_key}", "X-Namespace": namespace},
    ) as http:
        assert http.post("/write", json={"path": "keep.txt", "content": "k"}).status_code == 200
    target = ns_dir(hostile, namespace) / "partial.bin"
    for sent in (0, 1, 60 * KIB, 190 * KIB):
        _raw_exchange(hostile, namespace, "PUT", "/files/partial.bin", 200 * KIB, b"p" * sent, read=False)
        assert _wait_until(lambda: temp_files(hostile) == [])
        assert not target.exists()
    # Same through a chunked body that stops mid-stream.
    _raw_chunked_abort(hostile, namespace, "/files/partial.bin", b"q" * (100 * KIB))
    assert _wait_until(lambda: temp_files(hostile) == [])
    assert not target.exists()
    with httpx.Client(
        base_url=hostile.base_url,
        headers={"Authorization": f"Bearer {hostile.workspace_key}", "X-Namespace": namespace},
    ) as http:
        assert http.get("/files/partial.bin").status_code == 404
        assert http.get("/healthz").status_code == 200
        # The next upload to the same path is whole.
        assert http.put("/files/partial.bin", content=b"w" * 1000).json()["size_bytes"] == 1000
    assert target.read_bytes() == b"w" * 1000


def _connect(server: LiveServer) -> socket.socket:
    parts = urlsplit(server.base_url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _raw_exchange(
    server: LiveServer,
    namespace: str,
    method: str,
    target: str,
    declared: int,
    body: bytes,
    *,
    read: bool = True,
    half_close: bool = False,
) -> tuple[int, bytes, bytes]:
    """Send headers with ``declared`` Content-Length and ``body`` (possibly shorter), then read or hang up."""
    with _connect(server) as sock:
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.workspace_key}\r\nX-Namespace: {namespace}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
        ).encode()
        sock.sendall(head + body)
        if not read:
            return 0, b"", b""
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        status = int(head_bytes.split(b" ", 2)[1])
        return status, head_bytes, rest


def _raw_chunked_abort(server: LiveServer, namespace: str, target: str, body: bytes) -> None:
    with _connect(server) as sock:
        head = (
            f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.workspace_key}\r\nX-Namespace: {namespace}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        sock.sendall(head + f"{len(body):x}\r\n".encode() + body + b"\r\n")
