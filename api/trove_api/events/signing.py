"""The one webhook signing function: ``X-Trove-Signature: t=<unix>,v1=<hmac-sha256 hex>``."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from trove_core.names import WEBHOOK_SECRET_PREFIX

SIGNATURE_HEADER = "X-Trove-Signature"
EVENT_HEADER = "X-Trove-Event"
EVENT_ID_HEADER = "X-Trove-Event-Id"
DELIVERY_HEADER = "X-Trove-Delivery"


def new_secret() -> str:
    """A signing secret: the whole string (prefix included) is the HMAC key."""
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body``: HMAC-SHA256 over ``"<t>." + body`` keyed by the secret's UTF-8."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode("utf-8"), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"
