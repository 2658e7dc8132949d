"""Names and ids: the namespace pattern, id prefixes and key prefixes."""

from __future__ import annotations

import re
import secrets
from typing import Final

from trove_core.errors import NamespaceInvalidError

NAMESPACE_PATTERN: Final = r"^[A-Za-z0-9_-]{1,128}$"
_NAMESPACE_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")

# Id prefixes are wire strings (WIRE.md 1.6): add, never rename.
WORKSPACE_PREFIX: Final = "ws"
KEY_PREFIX: Final = "key"
EVENT_PREFIX: Final = "evt"
SNAPSHOT_PREFIX: Final = "snap"
AUTO_SNAPSHOT_PREFIX: Final = "auto"
WEBHOOK_PREFIX: Final = "wh"
DELIVERY_PREFIX: Final = "dlv"

WORKSPACE_KEY_PREFIX: Final = "trove-sk-"
ADMIN_KEY_PREFIX: Final = "trove-sk-admin-"
WEBHOOK_SECRET_PREFIX: Final = "trove-whsec-"  # noqa: S105 - a prefix, not a secret


def new_id(prefix: str, hex_chars: int = 16) -> str:
    """A random id such as ``snap-b1bde15ffe82b60a``."""
    return f"{prefix}-{secrets.token_hex(hex_chars // 2)}"


def is_valid_namespace(name: str) -> bool:
    return _NAMESPACE_RE.fullmatch(name) is not None


def validate_namespace(name: str) -> str:
    if not is_valid_namespace(name):
        raise NamespaceInvalidError(f"Invalid namespace {name[:140]!r}: it must match {NAMESPACE_PATTERN}")
    return name


def new_api_key(*, admin: bool) -> str:
    """A fresh key: 32 random bytes (256 bits) after the scope prefix."""
    prefix = ADMIN_KEY_PREFIX if admin else WORKSPACE_KEY_PREFIX
    return prefix + secrets.token_urlsafe(32)


def key_display_prefix(api_key: str) -> str:
    """The non-secret leading characters shown in key listings, e.g. ``trove-sk-abc1``."""
    scope_prefix = ADMIN_KEY_PREFIX if api_key.startswith(ADMIN_KEY_PREFIX) else WORKSPACE_KEY_PREFIX
    return api_key[: len(scope_prefix) + 4]
