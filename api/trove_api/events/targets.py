"""Webhook targets: the URL rule checked on create, and the address rule checked at delivery.

Resolving at delivery time (not just on create) and then connecting to the very address
that was checked closes the DNS-rebinding hole: a name that first resolves to a public
address cannot later point the server at 127.0.0.1 or a cloud metadata endpoint.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

URL_MAX_CHARS = 2048


class TargetRefused(Exception):
    """The URL is malformed or resolves to an address deliveries may not reach."""


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host and no credentials; returns it unchanged."""
    if len(url) > URL_MAX_CHARS:
        raise TargetRefused(f"Webhook URL is longer than {URL_MAX_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"Invalid webhook URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("Webhook URL must start with http:// or https://")
    if not parts.hostname:
        raise TargetRefused("Webhook URL must name a host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("Webhook URL must not carry credentials")
    if port == 0:
        raise TargetRefused("Webhook URL has an invalid port")
    if any(ch.isspace() for ch in url):
        raise TargetRefused("Webhook URL must not contain whitespace")
    return url


# IPv6 forms that carry an IPv4 address a router or the kernel may turn back into IPv4:
# NAT64 (64:ff9b::a.b.c.d) and the deprecated IPv4-compatible ::a.b.c.d. ipaddress calls
# both "global" whatever they embed; mapped (::ffff:), 6to4 (2002::) and Teredo (2001::/32)
# have accessors of their own.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (empty for a plain IPv6 address)."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)  # the relay server and the (de-obfuscated) client
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded:
            return all(is_public(inner) for inner in embedded)
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Target:
    """Where to connect: the URL to request, plus the headers/extensions that keep the name."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


async def resolve(url: str, *, allow_private: bool) -> Target:
    """Check ``url`` now; unless private targets are allowed, pin the connection to a vetted address."""
    check_url(url)
    if allow_private:
        return Target(url=url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if not is_public(literal):
            raise TargetRefused(f"Refused: {host} is a private, loopback or reserved address")
        return Target(url=url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetRefused(f"Could not resolve {host}: {exc}") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise TargetRefused(f"Could not resolve {host}")
    # Every answer must be public: otherwise the connection could pick the private one.
    for address in addresses:
        if not is_public(address):
            raise TargetRefused(f"Refused: {host} resolves to {address}, a private or reserved address")
    chosen = addresses[0]
    netloc = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    if parts.port is not None:
        netloc += f":{parts.port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Target(url=pinned, headers={"Host": host_header}, extensions=extensions)
