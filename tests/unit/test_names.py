"""trove_core.names: the namespace pattern, ids and API key generation."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trove_core.errors import NamespaceInvalidError
from trove_core.names import (
    ADMIN_KEY_PREFIX,
    NAMESPACE_PATTERN,
    WORKSPACE_KEY_PREFIX,
    is_valid_namespace,
    key_display_prefix,
    new_api_key,
    new_id,
    validate_namespace,
)

_REFERENCE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_NAME_CHARS = string.ascii_letters + string.digits + "_-"


def test_pattern_is_the_documented_one() -> None:
    assert NAMESPACE_PATTERN == r"^[A-Za-z0-9_-]{1,128}$"


@pytest.mark.parametrize("name", ["a", "A-b_9", "x" * 128, "-", "_", "0"])
def test_valid_names(name: str) -> None:
    assert is_valid_namespace(name)
    assert validate_namespace(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 129,
        "a b",
        "a/b",
        "..",
        ".",
        "a.b",
        "ns\n",
        "\nns",
        "é",
        "a\x00",
        "٣",
        "ｆｕｌｌ",
        "a:b",
        "ns ",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not is_valid_namespace(name)
    with pytest.raises(NamespaceInvalidError) as info:
        validate_namespace(name)
    assert info.value.code == "namespace_invalid"
    assert info.value.status == 400


@given(st.text(max_size=140))
def test_pattern_matches_reference_regex_on_any_text(name: str) -> None:
    assert is_valid_namespace(name) == (_REFERENCE.fullmatch(name) is not None)


@given(st.text(alphabet=_NAME_CHARS, min_size=1, max_size=140))
def test_pattern_on_name_alphabet(name: str) -> None:
    assert is_valid_namespace(name) == (len(name) <= 128)


def test_new_id_prefix_and_entropy() -> None:
    ids = {new_id("snap") for _ in range(500)}
    assert len(ids) == 500
    for value in ids:
        assert re.fullmatch(r"snap-[0-9a-f]{16}", value)
    assert re.fullmatch(r"evt-[0-9a-f]{32}", new_id("evt", 32))


@pytest.mark.parametrize(("admin", "prefix"), [(False, WORKSPACE_KEY_PREFIX), (True, ADMIN_KEY_PREFIX)])
def test_new_api_key(admin: bool, prefix: str) -> None:
    keys = [new_api_key(admin=admin) for _ in range(500)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert key.startswith(prefix)
        secret = key[len(prefix) :]
        # token_urlsafe(32): 43 url-safe characters = 256 bits.
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
        assert len(key) >= 24  # the CLI masks 14 + 4 characters
    # Spread: every position of the secret takes many values across 500 keys.
    # (The 43rd character carries only the last 4 bits.)
    for position in range(42):
        assert len({k[len(prefix) + position] for k in keys}) > 20
    assert len({k[-1] for k in keys}) > 8


def test_workspace_keys_never_look_like_admin_keys() -> None:
    assert not any(new_api_key(admin=False).startswith(ADMIN_KEY_PREFIX) for _ in range(200))


def test_key_display_prefix() -> None:
    assert key_display_prefix("trove-sk-abcdefghijkl") == "trove-sk-abcd"
    assert key_display_prefix("trove-sk-admin-abcdefghijkl") == "trove-sk-admin-abcd"
    for admin in (False, True):
        key = new_api_key(admin=admin)
        shown = key_display_prefix(key)
        assert key.startswith(shown)
        # Only 4 secret characters are ever shown.
        scope = ADMIN_KEY_PREFIX if admin else WORKSPACE_KEY_PREFIX
        assert len(shown) == len(scope) + 4
