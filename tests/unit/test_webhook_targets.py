"""Webhook URL rules (create) and address rules (delivery)."""

from __future__ import annotations

import ipaddress

import pytest

from trove_api.events.targets import TargetRefused, check_url, embedded_ipv4, is_public, resolve


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


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "http://[2002:a00:1::1]/",  # 6to4 of 10.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "http://[::127.0.0.1]/",  # IPv4-compatible loopback
        "http://[::192.168.1.1]/",  # IPv4-compatible private
        "http://[::ffff:169.254.169.254]/",  # mapped metadata
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
        "http://[2001:0:a00:1:8000:63bf:80ff:fefe]/",  # Teredo via a private relay
    ],
)
async def test_ipv6_forms_embedding_private_ipv4_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        await resolve(url, allow_private=False)


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("64:ff9b::808:808", ["8.8.8.8"]),
        ("2002:808:808::1", ["8.8.8.8"]),
        ("::ffff:1.2.3.4", ["1.2.3.4"]),
        ("::10.0.0.1", ["10.0.0.1"]),
        ("2606:4700::1111", []),
    ],
)
def test_embedded_ipv4_is_found(address: str, embedded: list[str]) -> None:
    assert [str(a) for a in embedded_ipv4(ipaddress.IPv6Address(address))] == embedded


def test_nat64_of_a_public_address_stays_reachable() -> None:
    assert is_public(ipaddress.ip_address("64:ff9b::808:808"))
    assert is_public(ipaddress.ip_address("2606:4700::1111"))
