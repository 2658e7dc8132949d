"""Shared fixtures: one live server per session (the contract and hostile suites share it)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.server import LiveServer, start_server


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    with start_server() as live:
        yield live


@pytest.fixture
def namespace() -> str:
    """A fresh namespace name per test, so tests never see each other's files."""
    return "t-" + secrets.token_hex(6)
