"""Keys keep tenants apart: locked keys, admin keys, revoked and malformed keys, bad namespaces."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from trove_sdk import TroveAuthError, TroveError

from tests.hostile.helpers import assert_problem, ns_dir, raw_client
from tests.support.sdk import admin, client
from tests.support.server import LiveServer


def _fs_operations(server: LiveServer) -> list[tuple[str, str, dict[str, object] | None]]:
    """Every operation that takes X-Namespace, read from the live OpenAPI (new ones are covered too)."""
    spec = httpx.get(server.base_url + "/openapi.json").json()
    ops = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            params = {p["name"].lower() for p in op.get("parameters", [])}
            if "x-namespace" not in params:
                continue
            url = path.replace("{path}", "probe.txt").replace("{", "").replace("}", "")
            body: dict[str, object] | None = {"path": "probe.txt", "content": "x", "command": "true"}
            if "requestBody" not in op or method == "put":
                body = None
            ops.append((method.upper(), url, body))
    return ops


def _call(http: httpx.Client, method: str, url: str, body: dict[str, object] | None) -> httpx.Response:
    if method == "PUT":
        return http.request(method, url, content=b"payload")
    if method == "GET" and url == "/v1/files/content":
        return http.request(method, url, params={"path": "probe.txt"})
    return http.request(method, url, json=body)


@pytest.fixture
def seeded(hostile: LiveServer, namespace: str) -> Iterator[str]:
    with raw_client(hostile, namespace) as http:
        assert http.post("/write", json={"path": "probe.txt", "content": "mine"}).status_code == 200
    return namespace


def test_fs_operations_are_discovered(hostile: LiveServer) -> None:
    found = {(m, u) for m, u, _ in _fs_operations(hostile)}
    for expected in [
        ("POST", "/v1/exec"),
        ("POST", "/exec"),
        ("POST", "/write"),
        ("PUT", "/files/probe.txt"),
        ("GET", "/files/probe.txt"),
        ("POST", "/delete"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/content"),
    ]:
        assert expected in found


def test_locked_key_cannot_reach_another_namespace(
    hostile: LiveServer, seeded: str, namespace: str, mint: Callable[..., str]
) -> None:
    locked = mint(namespace + "-own")
    for target in (seeded, namespace + "-never"):
        with raw_client(hostile, target, key=locked) as http:
            for method, url, body in _fs_operations(hostile):
                assert_problem(_call(http, method, url, body), 403, "namespace_forbidden")
    # The other namespace is untouched and nothing was provisioned for the refused one.
    assert (ns_dir(hostile, seeded) / "probe.txt").read_text() == "mine"
    assert not ns_dir(hostile, namespace + "-never").exists()
    with client(hostile, seeded, api_key=locked) as trove, pytest.raises(TroveAuthError) as info:
        trove.read_text("probe.txt")
    assert info.value.status_code == 403


def test_locked_key_works_in_its_own_namespace(
    hostile: LiveServer, namespace: str, mint: Callable[..., str]
) -> None:
    locked = mint(namespace)
    with raw_client(hostile, None, key=locked) as http:  # no header: defaults to the lock
        assert http.post("/write", json={"path": "a.txt", "content": "x"}).status_code == 200
    assert (ns_dir(hostile, namespace) / "a.txt").read_text() == "x"


def test_admin_key_is_refused_on_every_filesystem_endpoint(hostile: LiveServer, seeded: str) -> None:
    with raw_client(hostile, seeded, key=hostile.admin_key) as http:
        for method, url, body in _fs_operations(hostile):
            assert_problem(_call(http, method, url, body), 403, "admin_key_on_filesystem")
    assert (ns_dir(hostile, seeded) / "probe.txt").read_text() == "mine"
    with client(hostile, seeded, api_key=hostile.admin_key) as trove, pytest.raises(TroveAuthError) as info:
        trove.exec("id")
    assert info.value.status_code == 403


def test_revoked_key_is_refused_on_its_very_next_request(
    hostile: LiveServer, namespace: str, mint: Callable[..., str]
) -> None:
    key = mint()
    with raw_client(hostile, namespace, key=key) as http:
        assert http.post("/write", json={"path": "a.txt", "content": "x"}).status_code == 200
        key_id = http.get("/v1/me").json()["key_id"]
        with admin(hostile) as adm:
            adm.revoke_key(key_id)
        assert_problem(http.post("/write", json={"path": "b.txt", "content": "x"}), 401, "unauthenticated")
        assert_problem(http.get("/v1/me"), 401, "unauthenticated")
        assert_problem(http.post("/v1/exec", json={"command": "true"}), 401, "unauthenticated")
    assert not (ns_dir(hostile, namespace) / "b.txt").exists()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dHJvdmU6dHJvdmU=",
        "trove-sk-abc",
        "Bearer trove-sk-doesnotexist",
        "Bearer trove-sk-admin-doesnotexist",
        "Bearer sk-live-12345",
        "Bearer " + "trove-sk-" + "a" * 10_000,
        "Bearer trove-sk-\u00e9\u00e9",
        "Bearer {workspace_key}x",
        "Bearer {workspace_key_prefix}",
        "Bearer {workspace_key} extra",
    ],
)
def test_unknown_or_malformed_authorization_is_401(
    hostile: LiveServer, namespace: str, authorization: str | None
) -> None:
    headers: dict[str, str | bytes] = {"X-Namespace": namespace}
    if authorization is not None:
        value = authorization.format(
            workspace_key=hostile.workspace_key, workspace_key_prefix=hostile.workspace_key[:-1]
        )
        headers["Authorization"] = value.encode("utf-8")
    with httpx.Client(base_url=hostile.base_url, timeout=30) as http:
        for method, url, body in [
            ("GET", "/v1/me", None),
            ("POST", "/v1/exec", {"command": "true"}),
            ("POST", "/write", {"path": "x", "content": "x"}),
            ("GET", f"/v1/workspaces/{hostile.workspace_id}/keys", None),
        ]:
            response = http.request(method, url, json=body, headers=headers)
            assert_problem(response, 401, "unauthenticated")
    assert not ns_dir(hostile, namespace).exists()


def test_official_client_with_unknown_key(hostile: LiveServer, namespace: str) -> None:
    with (
        client(hostile, namespace, api_key="trove-sk-not-a-real-key") as trove,
        pytest.raises(TroveAuthError) as info,
    ):
        trove.exec("true")
    assert info.value.status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        b"../etc",
        b"a/b",
        b"a b",
        b"ns.1",
        b"x" * 129,
        b"\xc3\xa9t\xc3\xa9",
        b"..",
        b"a\tb",
        b"%2e%2e",
        b"ns\\x",
    ],
)
def test_invalid_namespace_header_is_400(hostile: LiveServer, header: bytes) -> None:
    headers = {"Authorization": f"Bearer {hostile.workspace_key}", "X-Namespace": header}
    with httpx.Client(base_url=hostile.base_url, timeout=30) as http:
        assert_problem(
            http.post("/write", json={"path": "x", "content": "x"}, headers=headers), 400, "namespace_invalid"
        )
        assert_problem(
            http.post("/v1/exec", json={"command": "true"}, headers=headers), 400, "namespace_invalid"
        )
        assert_problem(http.get("/v1/files", headers=headers), 400, "namespace_invalid")
    root = hostile.ctx.runtime.root / hostile.workspace_id  # type: ignore[attr-defined]
    assert all(p.name.startswith(("t-", ".")) or "-" in p.name for p in root.iterdir())


def test_missing_namespace_header_is_400(hostile: LiveServer) -> None:
    with raw_client(hostile) as http:
        assert_problem(http.post("/v1/exec", json={"command": "true"}), 400, "namespace_required")


def test_official_client_with_invalid_namespace(hostile: LiveServer) -> None:
    with client(hostile, "../../etc") as trove, pytest.raises(TroveError) as info:
        trove.write("x.txt", "x")
    assert info.value.status_code == 400
