"""E2B creates served by spare sandboxes (``runtimes/local/spares``), as the bench's loop runs them.

A spare is started for the uid the next namespace is predicted to get. Two things kept E2B's
creates from ever getting one: a sandbox started by E2B's warm-up (not a trove-sdk exec) never
started the next spare, and E2B's kill deletes the namespace's row, whose number SQLite then
gives to the next namespace again (the spare waited for the number after it).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator

import pytest
from e2b import Sandbox

from tests.hostile.helpers import ns_uid
from tests.support.sdk import client
from tests.support.server import LiveServer, start_server
from trove_api.runtimes.local.runtime import LocalRuntime
from trove_api.runtimes.local.spares import SpareSandboxes

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="spares need per-namespace uids (root)"),
    pytest.mark.skipif(
        os.environ.get("TROVE_TEST_BACKEND") == "kubernetes", reason="spare sandboxes are the local runtime's"
    ),
]


@pytest.fixture
def fresh_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """A server of its own: namespace numbers (and so uids) from 1, no other test's namespaces."""
    with start_server(sandbox_uid_base=1_700_000 + (os.getpid() % 1000) * 100) as server:
        monkeypatch.setenv("E2B_API_URL", f"{server.base_url}/e2b")
        monkeypatch.setenv("E2B_SANDBOX_URL", f"{server.base_url}/e2b")
        monkeypatch.setenv("E2B_API_KEY", server.workspace_key)
        yield server


def _spares(server: LiveServer) -> SpareSandboxes:
    runtime = server.ctx.runtime
    assert isinstance(runtime, LocalRuntime)
    assert runtime.spares is not None
    return runtime.spares


def _settle(spares: SpareSandboxes) -> None:
    """Until the spares wanted are ready (a bound, no assertion: ``claimed`` tells what happened).
    The bench does not wait; this test is about which uid is predicted, not how fast."""
    for _ in range(200):
        ready = dict(spares._ready)
        if all(uid in ready and ready[uid].sandbox is not None for uid in spares._wanted()):
            return
        time.sleep(0.05)


def _create_and_run() -> Sandbox:
    sbx = Sandbox.create()
    assert sbx.commands.run("true").exit_code == 0
    return sbx


def test_back_to_back_e2b_creates_and_new_namespaces_are_served_by_spares(fresh_env: LiveServer) -> None:
    spares = _spares(fresh_env)
    first = _create_and_run()  # the very first namespace: no spare can have been predicted
    assert spares.claimed == 0
    # Started by E2B's warm-up: the next namespace's spare is started all the same.
    _settle(spares)
    second = _create_and_run()
    assert spares.claimed == 1
    for round_ in range(3):
        claimed = spares.claimed
        _settle(spares)
        second.kill()  # the last one numbered: SQLite gives its number to the next namespace
        _settle(spares)
        with client(fresh_env, f"first-{secrets.token_hex(4)}") as trove:
            assert trove.exec("true") == ""
        assert spares.claimed == claimed + 1, round_
        _settle(spares)
        second = _create_and_run()
        assert spares.claimed == claimed + 2, round_
    second.kill()
    first.kill()  # not the last one numbered: the number predicted stays second's
    _settle(spares)
    with client(fresh_env, "last") as trove:
        assert trove.exec("true") == ""
    assert spares.claimed == 8, (spares._next, sorted(spares._ready), ns_uid(fresh_env, "last"))
