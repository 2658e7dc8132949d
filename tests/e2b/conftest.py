"""E2B suite fixtures: the official ``e2b`` SDK pointed at the live server's ``/e2b``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import LiveServer


@pytest.fixture
def e2b_env(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """The three variables a user sets; the SDK reads them on every call."""
    monkeypatch.setenv("E2B_API_URL", f"{server.base_url}/e2b")
    monkeypatch.setenv("E2B_SANDBOX_URL", f"{server.base_url}/e2b")
    monkeypatch.setenv("E2B_API_KEY", server.workspace_key)
    yield server
