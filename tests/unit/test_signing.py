"""The one signing function against the official verify_webhook."""

from __future__ import annotations

import json
import time

import pytest
from trove_sdk import WebhookSignatureError, verify_webhook

from trove_api.events.signing import new_secret, sign

BODY = json.dumps(
    {
        "id": "evt-1",
        "type": "file.written",
        "api_version": "2025-01-01",
        "workspace_id": "ws-1",
        "namespace": "n",
        "created_at": "2026-01-01T00:00:00.000000Z",
        "actor": {"key_id": "key-1", "key_name": "k"},
        "data": {"path": "workspace/é.txt", "size_bytes": 3},
    },
    separators=(",", ":"),
    ensure_ascii=False,
).encode()


def test_round_trip_with_official_verifier() -> None:
    secret = new_secret()
    assert secret.startswith("trove-whsec-")
    event = verify_webhook(secret=secret, body=BODY, signature_header=sign(secret, BODY))
    assert (event.id, event.type, event.data["path"]) == ("evt-1", "file.written", "workspace/é.txt")


def test_header_shape() -> None:
    header = sign("s", b"{}", timestamp=1700000000)
    t, v1 = header.split(",")
    assert t == "t=1700000000"
    assert v1.startswith("v1=")
    assert len(v1) == 3 + 64
    assert v1[3:] == v1[3:].lower()


def test_tampered_body_rejected() -> None:
    secret = new_secret()
    header = sign(secret, BODY)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(
            secret=secret, body=BODY.replace(b'"size_bytes":3', b'"size_bytes":4'), signature_header=header
        )


def test_wrong_secret_rejected() -> None:
    with pytest.raises(WebhookSignatureError):
        verify_webhook(secret=new_secret(), body=BODY, signature_header=sign(new_secret(), BODY))


@pytest.mark.parametrize("skew", [-301, 301])
def test_stale_timestamp_rejected(skew: int) -> None:
    secret = new_secret()
    header = sign(secret, BODY, timestamp=int(time.time()) + skew)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(secret=secret, body=BODY, signature_header=header)
