"""X-Forwarded-For counts only from trusted proxies (TROVE_FORWARDED_ALLOW_IPS).

Behind an ingress every request comes from the ingress: the device-login rate limit must key
on the client the proxy names, but only when the peer is a proxy we trust; anyone else could
otherwise dodge the limit with a made-up header. The test server's peer is 127.0.0.1.
"""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from tests.support.server import start_server
from trove_core.settings import Settings


def _start(base_url: str, forwarded_for: str) -> int:
    answer = httpx.post(
        f"{base_url}/v1/auth/device/start", headers={"X-Forwarded-For": forwarded_for}, timeout=30
    )
    return answer.status_code


def test_an_untrusted_peers_forwarded_for_is_ignored() -> None:
    with start_server(device_start_rate=1, forwarded_allow_ips="10.9.0.0/16") as live:
        assert _start(live.base_url, "203.0.113.1") == 200
        # Another made-up client address does not buy another attempt: the peer is the key.
        assert _start(live.base_url, "203.0.113.2") == 429


@pytest.mark.parametrize("trusted", ["127.0.0.1,::1", "127.0.0.0/8"])
def test_a_trusted_proxys_forwarded_for_is_honoured(trusted: str) -> None:
    with start_server(device_start_rate=1, forwarded_allow_ips=trusted) as live:
        assert _start(live.base_url, "203.0.113.1") == 200
        assert _start(live.base_url, "203.0.113.2") == 200  # another client behind the proxy
        assert _start(live.base_url, "203.0.113.1") == 429  # the same client again


def test_a_malformed_trusted_proxy_setting_is_refused() -> None:
    with pytest.raises(ValidationError, match="not an IP address"):
        Settings(forwarded_allow_ips="10.0.0.0/8,ingress-nginx")
