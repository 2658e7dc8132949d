"""trove_api.services.auth, pure parts: digests, bearer parsing, scope and namespace rules."""

from __future__ import annotations

import hashlib

import pytest

from trove_api.services.auth import (
    Caller,
    bearer_token,
    digest,
    require_admin,
    require_filesystem,
    require_workspace,
    resolve_namespace,
)
from trove_core.errors import (
    AdminKeyOnFilesystemError,
    AdminRequiredError,
    NamespaceForbiddenError,
    NamespaceInvalidError,
    NamespaceRequiredError,
    UnauthenticatedError,
    WorkspaceForbiddenError,
)

UNLOCKED = Caller("key-1", "ci", "ws-1", "workspace", None)
LOCKED = Caller("key-2", "agent", "ws-1", "workspace", "agent-7")
ADMIN = Caller("key-3", "root", "ws-1", "admin", None)


def test_digest_is_sha256_hex() -> None:
    key = "trove-sk-abc"
    assert digest(key) == hashlib.sha256(key.encode()).hexdigest()
    assert len(digest(key)) == 64
    assert digest(key) != digest(key + "d")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer trove-sk-x", "trove-sk-x"),
        ("bearer trove-sk-x", "trove-sk-x"),
        ("BEARER trove-sk-x", "trove-sk-x"),
        ("  Bearer    trove-sk-x  ", "trove-sk-x"),
    ],
)
def test_bearer_token(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Basic dXNlcjpwdw==",
        "trove-sk-x",
        "Token trove-sk-x",
    ],
)
def test_bearer_token_refuses(header: str | None) -> None:
    with pytest.raises(UnauthenticatedError) as info:
        bearer_token(header)
    assert info.value.status == 401
    assert info.value.code == "unauthenticated"


def test_locked_key_defaults_to_its_namespace() -> None:
    assert resolve_namespace(LOCKED, None) == "agent-7"
    assert resolve_namespace(LOCKED, "") == "agent-7"
    assert resolve_namespace(LOCKED, "  ") == "agent-7"
    assert resolve_namespace(LOCKED, "agent-7") == "agent-7"


@pytest.mark.parametrize("header", ["agent-8", "Agent-7", "agent-7x", "../agent-7", "bad name"])
def test_locked_key_refuses_other_namespaces(header: str) -> None:
    with pytest.raises(NamespaceForbiddenError) as info:
        resolve_namespace(LOCKED, header)
    assert info.value.status == 403


def test_unlocked_key_needs_a_valid_header() -> None:
    assert resolve_namespace(UNLOCKED, "agent-7") == "agent-7"
    assert resolve_namespace(UNLOCKED, " agent-7 ") == "agent-7"
    with pytest.raises(NamespaceRequiredError):
        resolve_namespace(UNLOCKED, None)
    with pytest.raises(NamespaceRequiredError):
        resolve_namespace(UNLOCKED, "")
    for bad in ("a/b", "..", "x" * 129, "a.b", "é"):
        with pytest.raises(NamespaceInvalidError):
            resolve_namespace(UNLOCKED, bad)


def test_scope_rules() -> None:
    require_filesystem(UNLOCKED)
    require_filesystem(LOCKED)
    with pytest.raises(AdminKeyOnFilesystemError) as fs_info:
        require_filesystem(ADMIN)
    assert fs_info.value.status == 403
    require_admin(ADMIN)
    for caller in (UNLOCKED, LOCKED):
        with pytest.raises(AdminRequiredError):
            require_admin(caller)
    require_workspace(ADMIN, "ws-1")
    with pytest.raises(WorkspaceForbiddenError):
        require_workspace(ADMIN, "ws-2")


def test_caller_actor() -> None:
    assert ADMIN.is_admin
    assert not UNLOCKED.is_admin
    assert LOCKED.actor.key_id == "key-2"
    assert LOCKED.actor.key_name == "agent"
