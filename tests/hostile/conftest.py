"""Hostile-suite fixtures: a live server with small limits, raw HTTP clients, minted keys.

Attacks go through the official client where it can express them and through raw httpx (or a
raw socket) where it cannot. Host-side checks look at the server's data dir and /proc directly,
so "nothing escaped" is verified from outside the sandbox, not only from inside.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.hostile.helpers import LIMITS, raw_client
from tests.support.sdk import admin
from tests.support.server import LiveServer, start_server


@pytest.fixture(scope="session")
def hostile() -> Iterator[LiveServer]:
    # Sandbox uids are base + namespace number; other test servers on this host (each with
    # its own database) use the default base, so a private base keeps host-side process
    # checks about this server's sandboxes only.
    uid_base = 300_000 + secrets.randbelow(600) * 1000
    with start_server(**LIMITS, sandbox_uid_base=uid_base) as live:
        yield live


@pytest.fixture
def api(hostile: LiveServer, namespace: str) -> Iterator[httpx.Client]:
    """Raw HTTP with the unlocked workspace key on a fresh namespace of the hostile server."""
    with raw_client(hostile, namespace) as http:
        yield http


@pytest.fixture
def mint(hostile: LiveServer) -> Callable[..., str]:
    """Mint a workspace key (optionally locked to a namespace) through the official admin client."""

    def mint_key(namespace: str | None = None) -> str:
        with admin(hostile) as adm:
            return adm.create_key("hostile-" + secrets.token_hex(3), namespace=namespace).api_key

    return mint_key
