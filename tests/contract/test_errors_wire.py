"""Wire details the client cannot express: legacy /exec, problem+json, X-Request-Id, no redirects.

Legacy ``POST /exec`` is what trove-sdk 0.2.2 ``exec()`` calls (and the 0.10.0 CLI on a 404
from /v1/exec). 0.2.2 cannot be installed beside 0.10.0 (same ``trove_sdk`` package), so this
replays its exact request with httpx: JSON ``{"command": ...}``, body read as ``response.text``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.sdk import client
from tests.support.server import LiveServer


@pytest.fixture
def http(server: LiveServer, namespace: str) -> Iterator[httpx.Client]:
    """Raw httpx with the workspace key and a fresh namespace; never follows redirects."""
    with httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {server.workspace_key}", "X-Namespace": namespace},
        follow_redirects=False,
        timeout=60,
    ) as raw:
        yield raw


# ── legacy POST /exec (0.2.2 exec) ───────────────────────────────────────────


def test_legacy_exec_success_is_plain_stdout(http: httpx.Client) -> None:
    response = http.post("/exec", json={"command": "echo x"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "x\n"


def test_legacy_exec_nonzero_is_200_with_exit_prefix(http: httpx.Client) -> None:
    response = http.post("/exec", json={"command": "exit 4"})
    assert response.status_code == 200
    assert response.text.startswith("[exit 4]")
    both = http.post("/exec", json={"command": "echo out; echo err >&2; exit 2"})
    assert both.status_code == 200
    assert both.text == "[exit 2]\nout\nerr\n"


def test_legacy_exec_accepts_stdin_and_sources_init_sh(http: httpx.Client) -> None:
    assert http.post("/write", json={"path": ".trove/init.sh", "content": "export G=legacy\n"}).is_success
    response = http.post("/exec", json={"command": "echo $G; wc -c", "stdin": "abc"})
    assert response.status_code == 200
    assert response.text.split() == ["legacy", "3"]


def test_legacy_write_delete_shapes_match_the_new_client(http: httpx.Client) -> None:
    # 0.2.2 write/upload/delete used the same paths and bodies as 0.10.0.
    written = http.post("/write", json={"path": "n.txt", "content": "hi"})
    assert written.json() == {"path": "workspace/n.txt", "size_bytes": 2}
    uploaded = http.put("/files/bin/x.dat", content=b"\x00\xff")
    assert uploaded.json() == {"path": "workspace/bin/x.dat", "size_bytes": 2}
    assert http.post("/delete", json={"path": "n.txt"}).json() == {"deleted": "workspace/n.txt"}


# ── raw uploads (curl, chunked) ──────────────────────────────────────────────


def test_curl_data_binary_upload_stores_raw_bytes(server: LiveServer, namespace: str, tmp_path: Path) -> None:
    # The API reference's CI recipe: curl --data-binary sends a form content type; the body
    # must still be stored byte for byte.
    local = tmp_path / "app.bin"
    local.write_bytes(bytes(range(256)) * 3)
    done = subprocess.run(
        [
            "curl", "--fail", "-sS", "-X", "PUT",
            "-H", f"Authorization: Bearer {server.workspace_key}",
            "-H", f"X-Namespace: {namespace}",
            "--data-binary", f"@{local}",
            f"{server.base_url}/files/dist/app.bin",
        ],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"path": "workspace/dist/app.bin", "size_bytes": 768}
    with client(server, namespace) as sdk:
        assert sdk.read_bytes("workspace/dist/app.bin") == local.read_bytes()


def test_chunked_upload_within_and_over_the_cap(capped_server: LiveServer, namespace: str) -> None:
    def chunks(count: int) -> Iterator[bytes]:
        for _ in range(count):
            yield b"a" * 100

    headers = {"Authorization": f"Bearer {capped_server.workspace_key}", "X-Namespace": namespace}
    # 60 s: a first write provisions the namespace (a pod, under `make e2e`).
    with httpx.Client(base_url=capped_server.base_url, headers=headers, timeout=60) as raw:
        ok = raw.put("/files/chunked.bin", content=chunks(10))
        assert ok.json() == {"path": "workspace/chunked.bin", "size_bytes": 1000}
        over = raw.put("/files/over.bin", content=chunks(30))
        assert over.status_code == 413
        assert isinstance(over.json()["detail"], str)
        # A refused upload leaves nothing behind.
        assert [e["path"] for e in raw.get("/v1/files").json()["entries"]] == ["workspace/chunked.bin"]


# ── problem+json and X-Request-Id ────────────────────────────────────────────


def _error_requests(server: LiveServer, namespace: str) -> list[tuple[int, str, str, dict[str, str], object]]:
    """(expected status, method, path, headers, json body) for one request per error kind."""
    ws_key = {"Authorization": f"Bearer {server.workspace_key}", "X-Namespace": namespace}
    adm = {"Authorization": f"Bearer {server.admin_key}"}
    bogus = {"Authorization": "Bearer trove-sk-" + secrets.token_urlsafe(32), "X-Namespace": namespace}
    ws = server.workspace_id
    return [
        (401, "POST", "/v1/exec", {}, {"command": "true"}),
        (401, "GET", "/v1/me", {}, None),
        (401, "POST", "/v1/exec", bogus, {"command": "true"}),
        (401, "POST", "/v1/exec", {"Authorization": "Basic abc"}, {"command": "true"}),
        (400, "POST", "/v1/exec", {"Authorization": ws_key["Authorization"]}, {"command": "true"}),
        (400, "POST", "/v1/exec", {**ws_key, "X-Namespace": "bad/ns"}, {"command": "true"}),
        (400, "POST", "/v1/exec", {**ws_key, "X-Namespace": ""}, {"command": "true"}),
        (400, "POST", "/v1/exec", {**ws_key, "X-Namespace": "x" * 129}, {"command": "true"}),
        (400, "POST", "/write", ws_key, {"path": "../x", "content": "x"}),
        (400, "POST", "/delete", ws_key, {"path": "workspace"}),
        (403, "POST", "/v1/exec", {**adm, "X-Namespace": namespace}, {"command": "true"}),
        (403, "POST", f"/v1/workspaces/{ws}/keys", ws_key, {"name": "x", "namespace": None, "admin": False}),
        (403, "GET", "/v1/workspaces/ws-other/keys", adm, None),
        (404, "GET", "/v1/files/content?path=workspace/missing", ws_key, None),
        (404, "POST", "/delete", ws_key, {"path": "missing"}),
        (404, "DELETE", f"/v1/workspaces/{ws}/keys/key-missing", adm, None),
        (404, "GET", "/no/such/route", ws_key, None),
        (405, "DELETE", "/v1/me", adm, None),
        (422, "POST", "/v1/exec", ws_key, {"nothing": 1}),
        (422, "POST", "/v1/exec", ws_key, {"command": "true", "stdin": "x" * (1024 * 1024 + 1)}),
        (422, "POST", "/write", ws_key, {"path": 5}),
        (413, "POST", "/write", ws_key, {"path": "big", "content": "x" * (10 * 1024 * 1024 + 1)}),
    ]


def test_every_error_is_problem_json_with_a_string_detail(server: LiveServer, namespace: str) -> None:
    with httpx.Client(base_url=server.base_url, follow_redirects=False, timeout=60) as raw:
        for status, method, path, headers, body in _error_requests(server, namespace):
            response = raw.request(method, path, headers=headers, json=body)
            where = f"{method} {path} -> {response.status_code}"
            assert response.status_code == status, where
            assert response.headers["content-type"].startswith("application/problem+json"), where
            problem = response.json()
            assert isinstance(problem["detail"], str), where
            assert problem["detail"], where
            assert problem["status"] == status, where
            assert isinstance(problem["title"], str), where
            assert isinstance(problem["type"], str), where
            assert isinstance(problem["code"], str), where
            assert response.headers.get("x-request-id"), where
            assert problem["request_id"] == response.headers["x-request-id"], where


def test_malformed_json_is_422_with_a_string_detail(http: httpx.Client) -> None:
    response = http.post("/v1/exec", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)


def test_every_response_carries_a_request_id(http: httpx.Client, server: LiveServer) -> None:
    http.post("/write", json={"path": "f.txt", "content": "x"})
    responses = [
        http.post("/v1/exec", json={"command": "echo hi"}),
        http.post("/exec", json={"command": "echo hi"}),
        http.get("/v1/files"),
        http.get("/v1/files/content", params={"path": "f.txt"}),
        http.get("/files/f.txt"),
        http.head("/files/f.txt"),
        http.put("/files/g.bin", content=b"x"),
        http.get("/v1/me"),
        http.get("/healthz"),
        http.post("/delete", json={"path": "g.bin"}),
        http.get("/files/missing"),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


def test_a_sane_incoming_request_id_is_echoed(http: httpx.Client) -> None:
    response = http.get("/v1/me", headers={"X-Request-Id": "trace-abc.123"})
    assert response.headers["x-request-id"] == "trace-abc.123"
    hostile = http.get("/v1/me", headers={"X-Request-Id": "x" * 500})
    assert hostile.headers["x-request-id"] != "x" * 500


def test_download_always_sends_both_trove_headers(http: httpx.Client) -> None:
    http.put("/files/h.bin", content=b"12345")
    response = http.get("/files/h.bin")
    assert response.status_code == 200
    assert response.headers["x-trove-size"] == "5"
    assert response.headers["x-trove-truncated"] == "0"
    assert response.content == b"12345"


# ── no 3xx anywhere ──────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/exec/"),
        ("POST", "/exec/"),
        ("POST", "/write/"),
        ("POST", "/delete/"),
        ("GET", "/v1/files/"),
        ("GET", "/v1/files/content/"),
        ("GET", "/v1/me/"),
        ("GET", "/files"),
        ("GET", "/files/"),
        ("PUT", "/files/"),
        ("GET", "/v1/workspaces/{ws}/keys/"),
        ("POST", "/v1/workspaces/{ws}/keys/"),
        ("GET", "/v1"),
        ("GET", "/"),
        ("GET", "/docs/"),
    ],
)
def test_no_redirect_for_slash_variants(
    http: httpx.Client, server: LiveServer, method: str, path: str
) -> None:
    response = http.request(method, path.format(ws=server.workspace_id), json={})
    assert not 300 <= response.status_code < 400, (method, path, response.status_code)
    if response.status_code >= 400:
        assert isinstance(response.json()["detail"], str)


def test_v1_exec_and_v1_me_never_404(http: httpx.Client, server: LiveServer) -> None:
    # A 404 here would send the CLI down its "old server" fallbacks.
    assert http.post("/v1/exec", json={"command": "exit 0"}).status_code == 200
    assert http.get("/v1/me").status_code == 200
    admin = {"Authorization": f"Bearer {server.admin_key}"}
    assert http.get("/v1/me", headers=admin).status_code == 200
