"""bench-k8s's client-ceiling baseline: the null sink takes whole bodies, request after request."""

from __future__ import annotations

import os

from trove_sdk import TroveClient

from bench.k8s_transfer import null_sink


def test_the_official_client_uploads_into_the_null_sink_repeatedly() -> None:
    payload = os.urandom(3 * 1024 * 1024 + 5)
    with null_sink() as url, TroveClient(api_key="trove-sk-x", namespace="n", base_url=url) as trove:
        for _ in range(3):  # one keep-alive connection: each body must be read to its end
            assert trove.upload("workspace/a.bin", payload).path == "workspace/sink.bin"
        assert trove.upload("workspace/empty", b"").path == "workspace/sink.bin"
