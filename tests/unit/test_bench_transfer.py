"""bench-k8s transfer figures: the null-sink baseline takes whole bodies; ratios come from medians."""

from __future__ import annotations

import os

from bench.k8s_transfer import null_sink, summary
from trove_sdk import TroveClient


def test_the_official_client_uploads_into_the_null_sink_repeatedly() -> None:
    payload = os.urandom(3 * 1024 * 1024 + 5)
    with null_sink() as url, TroveClient(api_key="trove-sk-x", namespace="n", base_url=url) as trove:
        for _ in range(3):  # one keep-alive connection: each body must be read to its end
            assert trove.upload("workspace/a.bin", payload).path == "workspace/sink.bin"
        assert trove.upload("workspace/empty", b"").path == "workspace/sink.bin"


def test_summary_takes_ratios_of_the_medians() -> None:
    samples: dict[str, list[float]] = {
        "up_sync": [70, 80, 75], "up_async": [100, 90, 95], "up_raw": [100, 1000, 90],
        "up_sync_cpu": [0.2, 0.1, 0.3], "up_async_cpu": [0.1, 0.1, 0.1], "up_sync_ceiling": [200, 100, 300],
        "read_sync": [120, 130, 140], "read_async": [110, 100, 120], "read_raw": [150, 160, 140],
        "read_sync_cpu": [0.2, 0.2, 0.2], "read_async_cpu": [0.3, 0.3, 0.3],
    }  # fmt: skip
    figures = summary(samples)
    upload, read = figures["upload_mbps"], figures["read_mbps"]
    assert (upload["api_sync_client"], upload["raw_exec_stream"], upload["ratio_sync_client"]) == (
        75,
        100,
        0.75,
    )
    assert upload["ratio_async_client"] == 0.95
    assert upload["sync_client_into_null_sink"] == 200
    assert upload["api_cpu_s_per_100mb"] == 0.1
    assert upload["rounds"]["up_raw"] == [100, 1000, 90]
    assert set(upload["rounds"]) == {"up_sync", "up_async", "up_raw", "up_sync_ceiling"}
    assert (read["ratio_sync_client"], read["ratio_async_client"], read["api_cpu_s_per_100mb"]) == (
        0.867,
        0.733,
        0.25,
    )
