"""Webhook URL rules (create) and address rules (delivery)."""

from __future__ import annotations

import pytest

from trove_api.events.targets import TargetRefused, check_url, resolve


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "example.com/x",
        "http:///nohost",
        "http://u:p@example.com/",
        "javascript:alert(1)",
        "http://exa mple.com/",
        "https://" + "a" * 3000 + ".com",
    ],
)
def test_bad_urls_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url)


def test_good_urls_pass() -> None:
    for url in ("http://example.com/hook", "https://example.com:8443/a?b=c"):
        assert check_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://10.1.2.3/",
        "http://[::1]/",
        "http://169.254.169.254/latest",
        "http://192.168.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://localhost:1/",
    ],
)
async def test_private_targets_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        await resolve(url, allow_private=False)


async def test_private_targets_allowed_when_configured() -> None:
    target = await resolve("http://127.0.0.1:9/x", allow_private=True)
    assert target.url == "http://127.0.0.1:9/x"


async def test_public_literal_is_used_as_is() -> None:
    target = await resolve("https://93.184.215.14/hook", allow_private=False)
    assert target.url == "https://93.184.215.14/hook"
