"""Keys, tokens, timeouts, fork, snapshots and addressing of the E2B API."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import AuthenticationException, SandboxException

from tests.e2b import WAIT_S
from tests.support.sdk import admin, client
from tests.support.server import LiveServer
from trove_api.e2b.access import sandbox_caller
from trove_api.e2b.records import SandboxRecords


def _mint(server: LiveServer, namespace: str | None = None) -> str:
    with admin(server) as adm:
        return adm.create_key("e2b-test", namespace=namespace).api_key


def test_locked_key_reaches_only_its_sandbox(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    other = Sandbox.create()
    try:
        locked = _mint(e2b_env, namespace=sbx.sandbox_id)
        mine = Sandbox.connect(sbx.sandbox_id, api_key=locked)
        mine.files.write("ok.txt", "yes")
        with pytest.raises(SandboxException, match="403"):
            Sandbox.connect(other.sandbox_id, api_key=locked)
        with pytest.raises(SandboxException, match="403"):
            Sandbox.create(api_key=locked)
        assert [s.sandbox_id for s in Sandbox.list(api_key=locked).next_items()] == [sbx.sandbox_id]
    finally:
        sbx.kill()
        other.kill()


def test_admin_and_unknown_keys_refused(e2b_env: LiveServer) -> None:
    with pytest.raises(SandboxException, match="403"):
        Sandbox.create(api_key=e2b_env.admin_key)
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="trove-sk-not-a-key")


def test_envd_token_checked(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    try:
        url = f"{e2b_env.base_url}/e2b/files"
        base = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"}
        assert httpx.get(url, params={"path": "x"}, headers=base, timeout=WAIT_S).status_code == 401
        wrong = base | {"X-Access-Token": "nope"}
        assert httpx.get(url, params={"path": "x"}, headers=wrong, timeout=WAIT_S).status_code == 401
    finally:
        sbx.kill()


def test_fork_and_snapshot_round_trips(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    made: list[Sandbox] = [sbx]
    try:
        sbx.files.write("state.txt", "v1")
        forks = sbx.fork()
        assert len(forks) == 1
        fork = forks[0]
        made.append(fork)
        assert fork.sandbox_id != sbx.sandbox_id
        assert fork.files.read("state.txt") == "v1"
        fork.files.write("state.txt", "fork")
        assert sbx.files.read("state.txt") == "v1"

        snap = sbx.create_snapshot()
        assert snap.snapshot_id in [s.snapshot_id for s in Sandbox.list_snapshots().next_items()]
        sbx.files.write("state.txt", "v2")
        restored = Sandbox.create(template=snap.snapshot_id)
        made.append(restored)
        assert restored.files.read("state.txt") == "v1"
        assert Sandbox.delete_snapshot(snap.snapshot_id) is True
        assert Sandbox.delete_snapshot(snap.snapshot_id) is False
    finally:
        for s in made:
            s.kill()


def test_timeout_kills_e2b_sandbox_not_trove_namespace(e2b_env: LiveServer, namespace: str) -> None:
    with client(e2b_env, namespace) as trove:
        trove.write("mine.txt", "trove-sdk made me")
    adopted = Sandbox.connect(namespace, timeout=1)
    doomed = Sandbox.create(timeout=1)
    doomed.files.write("gone.txt", "soon")
    # The server's sweeper ends expired sandboxes every e2b_sweep_interval_s: poll, no timing asserted.
    for _ in range(200):
        if not doomed.is_running():
            break
        time.sleep(0.05)
    assert not doomed.is_running()
    for _ in range(200):
        if not adopted.is_running():
            break
        time.sleep(0.05)
    # The adopted namespace's E2B session may end; its files never do.
    with client(e2b_env, namespace) as trove:
        assert trove.read("mine.txt") == "trove-sdk made me"


def test_unknown_route_is_a_501_problem(e2b_env: LiveServer) -> None:
    r = httpx.get(
        f"{e2b_env.base_url}/e2b/volumes", headers={"X-API-KEY": e2b_env.workspace_key}, timeout=WAIT_S
    )
    assert r.status_code == 501
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "not_implemented"


@pytest.fixture(scope="module")
def domain_server() -> LiveServer:
    from tests.support.server import start_server

    # A small JSON body cap: a host-routed upload must still be capped as an upload, not as JSON.
    with start_server(
        e2b_domain="e2b.example.test", json_body_max_bytes=65536, write_max_bytes=65536
    ) as live:
        yield live


def test_host_name_routing(domain_server: LiveServer) -> None:
    base = domain_server.base_url
    key = {"X-API-KEY": domain_server.workspace_key}
    r = httpx.post(
        f"{base}/v2/sandboxes",
        json={"templateID": "base"},
        headers=key | {"Host": "api.e2b.example.test"},
        timeout=WAIT_S,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    sandbox_host = f"49983-{created['sandboxID']}.e2b.example.test"
    token = {"X-Access-Token": created["envdAccessToken"], "Host": sandbox_host}
    up = httpx.post(
        f"{base}/files",
        params={"path": "h.txt"},
        content=b"by host",
        headers=token | {"Content-Type": "application/octet-stream"},
        timeout=WAIT_S,
    )
    assert up.status_code == 200, up.text
    down = httpx.get(f"{base}/files", params={"path": "/home/user/h.txt"}, headers=token, timeout=WAIT_S)
    assert down.content == b"by host"
    octet = token | {"Content-Type": "application/octet-stream"}
    big = httpx.post(
        f"{base}/files", params={"path": "big.bin"}, content=b"b" * 200_000, headers=octet, timeout=WAIT_S
    )
    assert big.status_code == 200, big.text
    assert httpx.get(f"{base}/health", headers=token, timeout=WAIT_S).status_code == 204
    # Without the domain's host name, the bare paths are Trove's own (no sandbox there).
    assert (
        httpx.get(
            f"{base}/health", headers={"X-Access-Token": created["envdAccessToken"]}, timeout=WAIT_S
        ).status_code
        == 404
    )


def test_a_sandbox_token_opens_only_its_sandbox(e2b_env: LiveServer) -> None:
    a, b = Sandbox.create(), Sandbox.create()
    try:
        b.files.write("secret.txt", "b's")
        token_a = Sandbox.connect(a.sandbox_id)._envd_access_token
        headers = {"E2b-Sandbox-Id": b.sandbox_id, "X-Access-Token": str(token_a)}
        r = httpx.get(
            f"{e2b_env.base_url}/e2b/files", params={"path": "secret.txt"}, headers=headers, timeout=WAIT_S
        )
        assert r.status_code == 401
        assert b"b's" not in r.content
    finally:
        a.kill()
        b.kill()


def test_revoked_creator_key_is_replaced_by_the_next_connect(e2b_env: LiveServer) -> None:
    with admin(e2b_env) as adm:
        minted = adm.create_key("e2b-short-lived")
    sbx = Sandbox.create(api_key=minted.api_key)
    try:
        sbx.files.write("x.txt", "1")
        with admin(e2b_env) as adm:
            adm.revoke_key(minted.key_id)
        with pytest.raises(AuthenticationException):
            sbx.files.read("x.txt")
        again = Sandbox.connect(sbx.sandbox_id)  # the workspace key of the fixture
        assert again.files.read("x.txt") == "1"
    finally:
        Sandbox.kill(sbx.sandbox_id)


def test_bad_and_oversized_gzip_uploads_refused(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    try:
        token = Sandbox.connect(sbx.sandbox_id)._envd_access_token
        headers = {
            "E2b-Sandbox-Id": sbx.sandbox_id,
            "X-Access-Token": str(token),
            "Content-Type": "application/octet-stream",
            "Content-Encoding": "gzip",
        }
        url = f"{e2b_env.base_url}/e2b/files"
        bad = httpx.post(
            url, params={"path": "bad.txt"}, content=b"not gzip at all", headers=headers, timeout=WAIT_S
        )
        assert bad.status_code == 400
        # A small body that inflates past the upload cap: refused, never held whole.
        bomb = gzip.compress(b"\0" * (e2b_env.settings.upload_max_bytes + 1))
        big = httpx.post(url, params={"path": "bomb.bin"}, content=bomb, headers=headers, timeout=60)
        assert big.status_code == 413
        assert not sbx.files.exists("bad.txt")
        assert not sbx.files.exists("bomb.bin")
    finally:
        sbx.kill()


@pytest.mark.parametrize(
    "body",
    [
        {"templateID": "base", "metadata": ["not", "a", "map"]},
        {"templateID": "base", "metadata": {"k": 1}},
        {"templateID": "base", "envVars": {"K": "v" * 20_000}},
        {"templateID": "base", "timeout": "soon"},
        {"templateID": "base", "timeout": 10**9},
        {"templateID": "no-such-template"},
    ],
)
def test_bad_create_bodies_are_e2b_errors(e2b_env: LiveServer, body: dict[str, object]) -> None:
    r = httpx.post(
        f"{e2b_env.base_url}/e2b/sandboxes",
        json=body,
        headers={"X-API-KEY": e2b_env.workspace_key},
        timeout=WAIT_S,
    )
    assert r.status_code in (400, 404), r.text
    assert r.json()["code"] == r.status_code
    assert isinstance(r.json()["message"], str)


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=100000", "nextToken=xyz"])
def test_bad_list_queries_are_400(e2b_env: LiveServer, query: str) -> None:
    r = httpx.get(
        f"{e2b_env.base_url}/e2b/v2/sandboxes?{query}",
        headers={"X-API-KEY": e2b_env.workspace_key},
        timeout=WAIT_S,
    )
    assert r.status_code == 400, r.text


def test_multipart_body_over_the_cap_refused(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    try:
        token = Sandbox.connect(sbx.sandbox_id)._envd_access_token
        headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "X-Access-Token": str(token)}
        half = b"x" * (e2b_env.settings.upload_max_bytes // 2 + 1)
        files = [("file", ("a.bin", half)), ("file", ("b.bin", half))]
        r = httpx.post(f"{e2b_env.base_url}/e2b/files", files=files, headers=headers, timeout=60)
        assert r.status_code == 413, r.text
        assert not sbx.files.exists("a.bin")
    finally:
        sbx.kill()


def test_an_in_sandbox_call_is_checked_in_one_database_read(
    e2b_env: LiveServer, sbx: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command and file call is authenticated: the sandbox's row and its key's state are
    one read, not two (each a trip to a worker thread and the database)."""
    db = e2b_env.ctx.db
    reads = []
    plain_read = db.read

    @contextlib.contextmanager
    def counted() -> Iterator[Any]:
        reads.append(1)
        with plain_read() as conn:
            yield conn

    token = str(Sandbox.connect(sbx.sandbox_id)._envd_access_token)
    headers = {"e2b-sandbox-id": sbx.sandbox_id, "x-access-token": token}
    monkeypatch.setattr(db, "read", counted)
    rec, caller = asyncio.run(sandbox_caller(SandboxRecords(db), headers))
    assert (rec.sandbox_id, caller.workspace_id) == (sbx.sandbox_id, e2b_env.workspace_id)
    assert len(reads) == 1
