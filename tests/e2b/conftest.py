"""E2B suite fixtures: the official ``e2b`` SDK pointed at the live server's ``/e2b``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2b import Sandbox

from tests.support.server import LiveServer, start_server


@pytest.fixture
def e2b_env(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """The three variables a user sets; the SDK reads them on every call."""
    monkeypatch.setenv("E2B_API_URL", f"{server.base_url}/e2b")
    monkeypatch.setenv("E2B_SANDBOX_URL", f"{server.base_url}/e2b")
    monkeypatch.setenv("E2B_API_KEY", server.workspace_key)
    return server


@pytest.fixture
def sbx(e2b_env: LiveServer) -> Iterator[Sandbox]:
    """A fresh sandbox through the SDK, killed after the test."""
    sandbox = Sandbox.create()
    try:
        yield sandbox
    finally:
        sandbox.kill()


@pytest.fixture(scope="session")
def big_server() -> Iterator[LiveServer]:
    """Uploads of 100 MB (the default upload cap is smaller)."""
    with start_server(upload_max_bytes=128 * 1024 * 1024) as live:
        yield live


@pytest.fixture
def big_env(big_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    monkeypatch.setenv("E2B_API_URL", f"{big_server.base_url}/e2b")
    monkeypatch.setenv("E2B_SANDBOX_URL", f"{big_server.base_url}/e2b")
    monkeypatch.setenv("E2B_API_KEY", big_server.workspace_key)
    return big_server


@pytest.fixture(scope="session")
def quick_keepalive_server() -> Iterator[LiveServer]:
    """Keep-alives (and so the re-checks of a watch's key and sandbox) every 0.2 s."""
    with start_server(sse_keepalive_s=0.2) as live:
        yield live
