"""``get_metrics`` reports the sandbox's real CPU and memory figures (plausible, not timed)."""

from __future__ import annotations

import math
import os
from typing import Any

from e2b import Sandbox, SandboxState
from kubernetes.utils import parse_quantity

from tests.support.server import LiveServer


def test_metrics_see_a_cpu_burning_command(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    try:
        sbx.files.write("ten.bin", b"0123456789")
        burner = sbx.commands.run("while :; do :; done", background=True)
        try:
            # Each figure is the rate since the call before; polled until the burner has been
            # scheduled in one of those windows (a busy host may not run it at once).
            seen = []
            for _ in range(50):
                seen.append(sbx.get_metrics()[-1])
                if seen[-1].cpu_used_pct > 0:
                    break
        finally:
            burner.kill()
        assert 0 < seen[-1].cpu_used_pct <= 100
        for metric in seen:
            assert metric.cpu_count >= 1
            assert 0 <= metric.cpu_used_pct <= 100
            assert 0 < metric.mem_used <= metric.mem_total
            assert metric.disk_used == 10
    finally:
        sbx.kill()


def _memory_limit_mb(server: LiveServer) -> int:
    if os.environ.get("TROVE_TEST_BACKEND") == "kubernetes":
        return int(parse_quantity(server.settings.k8s_memory_limit)) // (1024 * 1024)
    return server.settings.exec_memory_mb


def _cpus_given(server: LiveServer) -> int:
    if os.environ.get("TROVE_TEST_BACKEND") == "kubernetes":
        return math.ceil(parse_quantity(server.settings.k8s_cpu_limit))  # the pod's limit
    return len(os.sched_getaffinity(0))  # a local sandbox runs on the server's CPUs


def test_info_list_and_metrics_report_what_the_sandbox_is_given(e2b_env: LiveServer, sbx: Sandbox) -> None:
    """On Kubernetes the agent in the pod counts the node's CPUs; the pod is given its limit
    (caught there: metrics said 2 where list/get_info said 1)."""
    info = Sandbox.get_info(sbx.sandbox_id)
    (listed,) = [s for s in Sandbox.list().next_items() if s.sandbox_id == sbx.sandbox_id]
    for seen in (info, listed):
        assert seen.cpu_count == _cpus_given(e2b_env) >= 1
        assert seen.memory_mb == _memory_limit_mb(e2b_env)
    assert sbx.get_metrics()[-1].cpu_count == _cpus_given(e2b_env)


def _warm_since(server: LiveServer, sandbox_id: str) -> float | None:
    """When the local runtime last used the sandbox's warm sandbox (None: none is warm)."""
    runtime: Any = server.ctx.runtime
    warm = runtime.sandboxes.warm.get(f"{server.workspace_id}.{sandbox_id}")
    return None if warm is None else float(warm.last_used)


def test_metrics_of_a_paused_sandbox_are_empty_and_wake_nothing(e2b_env: LiveServer, sbx: Sandbox) -> None:
    sbx.files.write("kept.txt", "x")
    sbx.pause()
    local = os.environ.get("TROVE_TEST_BACKEND") != "kubernetes"
    before = _warm_since(e2b_env, sbx.sandbox_id) if local else None
    assert sbx.get_metrics() == []  # what E2B answers for a sandbox that is not running
    assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
    if local:  # the runtime was not asked: its sandbox was neither started nor used
        assert _warm_since(e2b_env, sbx.sandbox_id) == before
