"""``get_metrics`` reports the sandbox's real CPU and memory figures (plausible, not timed)."""

from __future__ import annotations

from e2b import Sandbox

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
