"""Contract-suite fixtures: the official clients bound to the live server, plus special servers.

Every test here talks to the server only through the wire (official SDK, CLI, MCP server, or
raw httpx where the client cannot express a case), so another backend can run it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from trove_sdk import KeyCreated, TroveClient

from tests.support.sdk import admin, client
from tests.support.server import LiveServer, start_server


@pytest.fixture
def trove(server: LiveServer, namespace: str) -> Iterator[TroveClient]:
    """The official sync client with the unlocked workspace key, on a fresh namespace."""
    with client(server, namespace) as sdk:
        yield sdk


@pytest.fixture(scope="session")
def timeout_server() -> Iterator[LiveServer]:
    """A server whose exec wall clock is 2 s, so the 408 path runs quickly (no timing asserts)."""
    with start_server(exec_timeout_s=2) as live:
        yield live


@pytest.fixture(scope="session")
def capped_server() -> Iterator[LiveServer]:
    """Small read/upload caps, so the truncation and 413 paths run without 100 MB bodies."""
    with start_server(read_max_bytes=1000, upload_max_bytes=2000) as live:
        yield live


@pytest.fixture
def mint_key(server: LiveServer) -> Callable[..., KeyCreated]:
    """Mint a workspace key through the official admin client."""

    def mint(name: str, namespace: str | None = None) -> KeyCreated:
        with admin(server) as adm:
            return adm.create_key(name, namespace=namespace)

    return mint
