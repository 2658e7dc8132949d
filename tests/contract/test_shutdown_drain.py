"""`trove-server serve` with TROVE_SHUTDOWN_DRAIN_S: after SIGTERM it keeps serving, unready.

What a rolling update needs (issue 16, item 2): the pod's address leaves the Service some time
after SIGTERM, so calls that still arrive must be answered; /readyz says 503 so nothing new is
routed here, and each response closes its connection so keep-alive clients reconnect elsewhere.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from trove_sdk import TroveClient

from tests.contract.test_server_process import _keys, data_dir, serve

__all__ = ["data_dir"]  # the fixture, imported for this module's tests


def test_sigterm_drains_first_then_stops(data_dir: Path) -> None:
    # A drain far longer than this test's calls take: nothing below races its end.
    with serve(data_dir, TROVE_SHUTDOWN_DRAIN_S="60") as served:
        _, workspace = _keys(data_dir)
        with (
            httpx.Client(base_url=served.base_url, timeout=30) as http,
            TroveClient(api_key=workspace, namespace="drain", base_url=served.base_url) as sdk,
        ):
            assert http.get("/readyz").status_code == 200
            assert "connection" not in http.get("/healthz").headers
            sdk.write("workspace/kept.txt", "kept\n")
            served.proc.send_signal(signal.SIGTERM)
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/problem+json"
            assert ready.headers["retry-after"] == "1"
            assert ready.headers["connection"] == "close"
            # Calls still arriving are served, on fresh connections.
            assert sdk.exec("cat workspace/kept.txt") == "kept\n"
            sdk.upload("workspace/late.bin", b"\x00late")
            assert http.get("/healthz").headers["connection"] == "close"
            assert served.proc.poll() is None
            # A second SIGTERM (or SIGINT) does not wait out the drain.
            served.proc.send_signal(signal.SIGTERM)
            assert served.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert (data_dir / "namespaces").exists()


def test_without_a_drain_sigterm_stops_at_once(data_dir: Path) -> None:
    with serve(data_dir) as served:
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=60) in (0, -signal.SIGTERM)
