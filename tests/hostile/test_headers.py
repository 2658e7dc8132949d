"""Request headers are bounded at the server: size, count and time, refused as problem+json.

Raw sockets against the real uvicorn server, because no HTTP client sends such requests.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import LiveServer, start_server

HEADER_TIMEOUT_S = 1.0
WAIT_S = 30  # an upper bound for a socket wait, never an assertion about speed


@pytest.fixture(scope="module")
def guarded() -> Iterator[LiveServer]:
    with start_server(http_header_timeout_s=HEADER_TIMEOUT_S) as live:
        yield live


def _connect(live: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.settings.port), timeout=WAIT_S)
    return sock


def _send(sock: socket.socket, data: bytes) -> None:
    # The server may answer and hang up before the whole request is in.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def _read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"the server did not close the connection; got {b''.join(chunks)[:300]!r}")


def _problem(raw: bytes, status: int, code: str) -> dict[str, object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), raw[:300]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/problem+json", headers
    assert headers["x-content-type-options"] == "nosniff"
    problem: dict[str, object] = json.loads(body)
    assert (problem["status"], problem["code"]) == (status, code), problem
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    assert problem["request_id"] == headers["x-request-id"]
    return problem


def _request_head(*headers: bytes) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: trove\r\n" + b"".join(headers)


def test_a_one_mebibyte_header_is_refused_with_431(guarded: LiveServer) -> None:
    with _connect(guarded) as sock:
        _send(sock, _request_head(b"X-Big: " + b"a" * (1024 * 1024) + b"\r\n", b"\r\n"))
        _problem(_read_until_closed(sock), 431, "headers_too_large")


def test_a_header_over_the_limit_is_refused_before_it_ends(guarded: LiveServer) -> None:
    """An endless header line: the server answers once it passes the limit, not at its end."""
    with _connect(guarded) as sock:
        _send(sock, _request_head(b"X-Big: "))
        for _ in range(40):
            _send(sock, b"b" * 8192)
        _problem(_read_until_closed(sock), 431, "headers_too_large")


def _peak_rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])


def test_a_64_mib_header_does_not_grow_the_server(guarded: LiveServer) -> None:
    """The server runs in this process: its peak RSS (reset first) is this process's."""
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _peak_rss_kib()
    mib = b"h" * (1024 * 1024)  # sent 64 times: the client holds 1 MiB, not 64

    def send_huge(sock: socket.socket) -> None:
        _send(sock, _request_head(b"X-Huge: "))
        for _ in range(64):
            _send(sock, mib)

    with _connect(guarded) as sock:
        sender = threading.Thread(target=send_huge, args=(sock,), daemon=True)
        sender.start()
        _problem(_read_until_closed(sock), 431, "headers_too_large")
        sender.join(WAIT_S)
    grown_kib = _peak_rss_kib() - before
    assert grown_kib < 16 * 1024, f"the server grew by {grown_kib} KiB"


def test_ten_thousand_headers_are_refused_with_431(guarded: LiveServer) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    with _connect(guarded) as sock:
        _send(sock, _request_head(many, b"\r\n"))
        problem = _problem(_read_until_closed(sock), 431, "headers_too_large")
        assert "header fields" in str(problem["detail"])


def test_slowloris_is_cut_off_after_the_header_timeout(guarded: LiveServer) -> None:
    with _connect(guarded) as sock:
        _send(sock, _request_head())
        sock.settimeout(0.2)
        received = b""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:  # one header byte every 0.2 s, for ever
            try:
                _send(sock, b"X-Slow-" + str(int(time.monotonic() * 10)).encode() + b": x\r\n")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError("the trickling connection stayed open")
        _problem(received, 408, "header_timeout")


def test_a_control_byte_in_x_namespace_answers_problem_json(guarded: LiveServer) -> None:
    for bad in (b"\x00", b"\x01"):
        with _connect(guarded) as sock:
            request = (
                b"POST /v1/exec HTTP/1.1\r\nHost: trove\r\n"
                b"Authorization: Bearer " + guarded.workspace_key.encode() + b"\r\n"
                b"X-Namespace: ns" + bad + b"x\r\nContent-Length: 2\r\n\r\n{}"
            )
            _send(sock, request)
            _problem(_read_until_closed(sock), 400, "malformed_request")


def test_ordinary_requests_and_keep_alive_are_unaffected(guarded: LiveServer) -> None:
    headers = {f"X-Extra-{i}": "v" * 100 for i in range(60)}
    with httpx.Client(base_url=guarded.base_url, timeout=WAIT_S) as http:
        for _ in range(3):  # one connection, several requests
            answer = http.get("/healthz", headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-content-type-options"] == "nosniff"
        time.sleep(HEADER_TIMEOUT_S * 1.5)  # idle between requests is not a slow request
        assert http.get("/healthz").status_code == 200


def test_pipelined_and_split_requests_still_parse(guarded: LiveServer) -> None:
    one = _request_head(b"\r\n")
    with _connect(guarded) as sock:
        for piece in (one[:5], one[5:20], one[20:] + one):  # split, then two in one write
            _send(sock, piece)
            time.sleep(0.05)
        sock.settimeout(WAIT_S)
        answers = b""
        while answers.count(b'{"status":"ok"}') < 2:
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
        assert answers.count(b"HTTP/1.1 200 OK") == 2


def test_every_kind_of_answer_says_nosniff(guarded: LiveServer, namespace: str) -> None:
    auth = {"Authorization": f"Bearer {guarded.workspace_key}", "X-Namespace": namespace}
    with httpx.Client(base_url=guarded.base_url, timeout=WAIT_S) as http:
        assert http.post("/write", json={"path": "a.txt", "content": "<html>"}, headers=auth).is_success
        answers = [
            http.get("/files/a.txt", headers=auth),  # a file's bytes
            http.get("/v1/me"),  # 401 problem
            http.get("/no/such/route"),  # 404 problem
            http.get("/cli"),  # HTML with its own security headers
        ]
        with http.stream(
            "GET",
            f"/v1/workspaces/{guarded.workspace_id}/webhooks/stream",
            headers={"Authorization": f"Bearer {guarded.admin_key}"},
        ) as stream:
            answers.append(stream)
        for answer in answers:
            assert answer.headers.get_list("x-content-type-options") == ["nosniff"], answer.request.url
