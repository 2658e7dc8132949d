"""Identity and keys through the official admin client: /v1/me, mint, list, revoke, scopes, locks."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import httpx
import pytest
from trove_sdk import KeyCreated, TroveAdminClient, TroveAuthError, TroveError, TroveNotFoundError

from tests.support.sdk import admin, client
from tests.support.server import LiveServer

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def _me(server: LiveServer, api_key: str) -> dict[str, object]:
    # The SDK only surfaces workspace_id from /v1/me; the CLI shows the rest (test_cli.py).
    response = httpx.get(f"{server.base_url}/v1/me", headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


def test_from_api_key_discovers_the_workspace(server: LiveServer) -> None:
    with TroveAdminClient.from_api_key(server.admin_key, base_url=server.base_url) as adm:
        # The discovered id is private; it shows in the URLs the client builds.
        assert adm._workspace_id == server.workspace_id
        assert adm._workspace_id.startswith("ws-")
        assert any(k.scope == "admin" for k in adm.list_keys())


def test_me_reports_scope_and_lock_for_every_kind_of_key(
    server: LiveServer, mint_key: Callable[..., KeyCreated], namespace: str
) -> None:
    locked = mint_key("locked-me", namespace=namespace)
    for key, scope, lock in (
        (server.admin_key, "admin", None),
        (server.workspace_key, "workspace", None),
        (locked.api_key, "workspace", namespace),
    ):
        me = _me(server, key)
        assert set(me) >= {"workspace_id", "key_id", "key_name", "scope", "namespace"}
        assert (me["workspace_id"], me["scope"], me["namespace"]) == (server.workspace_id, scope, lock)
    assert _me(server, locked.api_key)["key_id"] == locked.key_id
    assert _me(server, locked.api_key)["key_name"] == "locked-me"


def test_create_key_returns_plaintext_once_with_metadata(server: LiveServer) -> None:
    with admin(server) as adm:
        key = adm.create_key("w")
        assert key.api_key.startswith("trove-sk-")
        assert not key.api_key.startswith("trove-sk-admin-")
        assert len(key.api_key) >= 24
        assert key.api_key.startswith(key.prefix)
        assert key.prefix != key.api_key
        assert key.key_id.startswith("key-")
        assert (key.name, key.scope, key.namespace) == ("w", "workspace", None)
        assert TIMESTAMP.match(key.created_at)
        listed = {k.key_id: k for k in adm.list_keys()}
        assert listed[key.key_id].prefix == key.prefix
        assert listed[key.key_id].scope == "workspace"


def test_scoped_key_is_listed_with_its_namespace(server: LiveServer, namespace: str) -> None:
    with admin(server) as adm:
        plain = adm.create_key("plain-" + namespace)
        alice = adm.create_key("alice", namespace=namespace)
        assert alice.namespace == namespace
        listed = {k.key_id: k for k in adm.list_keys()}
        assert listed[plain.key_id].namespace is None
        assert listed[alice.key_id].namespace == namespace
        assert listed[alice.key_id].name == "alice"


def test_scoped_key_works_in_its_namespace_and_with_an_empty_header(
    server: LiveServer, mint_key: Callable[..., KeyCreated], namespace: str
) -> None:
    alice = mint_key("alice", namespace=namespace)
    with client(server, namespace, alice.api_key) as own:
        own.write("workspace/mine.txt", "a")
        assert own.exec("cat workspace/mine.txt") == "a"
    # An empty X-Namespace falls back to the key's lock.
    with client(server, "", alice.api_key) as defaulted:
        assert defaulted.read_text("workspace/mine.txt") == "a"
        assert defaulted.exec("cat workspace/mine.txt") == "a"
    # The unlocked workspace key sees the same namespace.
    with client(server, namespace) as unlocked:
        assert unlocked.read_text("workspace/mine.txt") == "a"


def test_scoped_key_in_another_namespace_is_403(
    server: LiveServer, mint_key: Callable[..., KeyCreated], namespace: str
) -> None:
    alice = mint_key("alice", namespace=namespace)
    with client(server, namespace + "-bob", alice.api_key) as other:
        for call in (
            lambda: other.exec("echo hi"),
            lambda: other.write("workspace/x.txt", "x"),
            lambda: other.read_text("workspace/x.txt"),
            lambda: other.list_dir(),
            lambda: other.upload("workspace/x.bin", b"x"),
            lambda: other.delete("workspace/x.txt"),
        ):
            with pytest.raises(TroveAuthError) as caught:
                call()
            assert caught.value.status_code == 403


def test_admin_key_cannot_touch_the_filesystem(server: LiveServer, namespace: str) -> None:
    with client(server, namespace, server.admin_key) as as_admin:
        with pytest.raises(TroveAuthError) as caught:
            as_admin.exec("echo hi")
        assert caught.value.status_code == 403
        with pytest.raises(TroveAuthError):
            as_admin.write("workspace/x.txt", "x")
        with pytest.raises(TroveAuthError):
            as_admin.list_dir()


def test_workspace_key_cannot_mint_or_revoke(server: LiveServer, mint_key: Callable[..., KeyCreated]) -> None:
    victim = mint_key("victim")
    with admin(server, server.workspace_key) as as_workspace:
        with pytest.raises(TroveAuthError) as caught:
            as_workspace.create_key("nope")
        assert caught.value.status_code == 403
        with pytest.raises(TroveAuthError) as caught:
            as_workspace.revoke_key(victim.key_id)
        assert caught.value.status_code == 403
        # Listing is allowed for an unlocked workspace key (WIRE.md A13).
        assert victim.key_id in {k.key_id for k in as_workspace.list_keys()}


def test_locked_key_cannot_list_keys(
    server: LiveServer, mint_key: Callable[..., KeyCreated], namespace: str
) -> None:
    locked = mint_key("locked", namespace=namespace)
    with admin(server, locked.api_key) as as_locked:
        with pytest.raises(TroveAuthError) as caught:
            as_locked.list_keys()
        assert caught.value.status_code == 403


def test_revoked_key_gets_401_at_once(
    server: LiveServer, mint_key: Callable[..., KeyCreated], namespace: str
) -> None:
    key = mint_key("short-lived")
    with client(server, namespace, key.api_key) as sdk:
        assert sdk.exec("echo ok") == "ok\n"
        with admin(server) as adm:
            adm.revoke_key(key.key_id)
            assert key.key_id not in {k.key_id for k in adm.list_keys()}
            with pytest.raises(TroveNotFoundError) as caught:
                adm.revoke_key(key.key_id)
            assert caught.value.status_code == 404
        with pytest.raises(TroveAuthError) as caught:
            sdk.exec("echo ok")
        assert caught.value.status_code == 401
    with pytest.raises(TroveAuthError) as caught:
        TroveAdminClient.from_api_key(key.api_key, base_url=server.base_url)
    assert caught.value.status_code == 401


def test_revoking_an_unknown_key_is_404(server: LiveServer) -> None:
    with admin(server) as adm, pytest.raises(TroveNotFoundError):
        adm.revoke_key("key-" + secrets.token_hex(8))


def test_unknown_keys_get_401(server: LiveServer, namespace: str) -> None:
    for bogus in ("trove-sk-" + secrets.token_urlsafe(32), "not-a-trove-key", "trove-sk-admin-x"):
        with client(server, namespace, bogus) as sdk, pytest.raises(TroveAuthError) as caught:
            sdk.exec("echo hi")
        assert caught.value.status_code == 401
        with pytest.raises(TroveAuthError):
            TroveAdminClient.from_api_key(bogus, base_url=server.base_url)


def test_other_workspace_in_the_url_is_403(server: LiveServer) -> None:
    with TroveAdminClient(
        api_key=server.admin_key, workspace_id="ws-" + secrets.token_hex(8), base_url=server.base_url
    ) as wrong:
        for call in (wrong.list_keys, lambda: wrong.create_key("x"), lambda: wrong.revoke_key("key-1")):
            with pytest.raises(TroveAuthError) as caught:
                call()
            assert caught.value.status_code == 403


def test_invalid_namespace_lock_is_rejected(server: LiveServer) -> None:
    with admin(server) as adm, pytest.raises(TroveError) as caught:
        adm.create_key("bad", namespace="no/slashes")
    assert caught.value.status_code in (400, 422)
    assert isinstance(caught.value.args[0], str)


def test_admin_key_with_namespace_lock_is_422(server: LiveServer) -> None:
    # Only the CLI sends admin=true, and it refuses --admin with --namespace locally; the raw
    # request must still be refused by the server.
    response = httpx.post(
        f"{server.base_url}/v1/workspaces/{server.workspace_id}/keys",
        json={"name": "x", "namespace": "alice", "admin": True},
        headers={"Authorization": f"Bearer {server.admin_key}"},
    )
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)


def test_minted_admin_key_is_an_admin(server: LiveServer) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/workspaces/{server.workspace_id}/keys",
        json={"name": "second-admin", "namespace": None, "admin": True},
        headers={"Authorization": f"Bearer {server.admin_key}"},
    )
    assert response.status_code == 201
    created = response.json()
    assert created["api_key"].startswith("trove-sk-admin-")
    assert created["scope"] == "admin"
    with TroveAdminClient.from_api_key(created["api_key"], base_url=server.base_url) as adm:
        minted = adm.create_key("by-second-admin")
        adm.revoke_key(minted.key_id)
        adm.revoke_key(created["key_id"])
