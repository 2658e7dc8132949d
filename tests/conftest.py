"""Shared fixtures: one live server per session (the contract and hostile suites share it)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support import diagnostics
from tests.support.s3 import S3Server, start_s3
from tests.support.server import LiveServer, start_server


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    with start_server() as live:
        yield live


@pytest.fixture
def namespace() -> str:
    """A fresh namespace name per test, so tests never see each other's files."""
    return "t-" + secrets.token_hex(6)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS) on loopback with real credentials; started on first use."""
    with start_s3() as live:
        yield live


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test against the cluster carries the operator's log and the cluster's state."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for title, text in diagnostics.sections():
            report.sections.append((title, text))
