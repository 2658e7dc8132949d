"""Exec round trip through the official client vs spawning the same bubblewrap sandbox directly.

A warm sandbox per namespace must make an exec cheaper than starting a sandbox: p50 <= 0.8x and
p95 <= 1.2x a raw setpriv+bwrap spawn of `bash -c true` (bench/sandbox.py builds its argv).
"""

from __future__ import annotations

import time

from trove_sdk import TroveClient

from bench.common import Result, ServerProcess, cpu_seconds, header, latency_summary, launch_server, ratio
from bench.sandbox import raw_sandbox

NAME = "exec_latency"
COMMAND = "true"
NAMESPACE = "bench-exec"
WARMUP = 20
RUNS = 200
TARGET_P50_RATIO = 0.8
TARGET_P95_RATIO = 1.2


def run(server: ServerProcess, runs: int = RUNS, warmup: int = WARMUP) -> Result:
    header(f"exec round trip: client.exec({COMMAND!r}) vs raw bwrap, {runs} runs after {warmup} warm-up")
    with TroveClient(server.workspace_key, NAMESPACE, base_url=server.base_url) as client:
        client.exec(COMMAND)  # provisions the namespace, so the raw argv can be built
        raw = raw_sandbox(server, NAMESPACE, COMMAND)
        for _ in range(warmup):
            client.exec(COMMAND)
            raw.run_sync()
        client_s: list[float] = []
        raw_s: list[float] = []
        server_cpu_s = 0.0
        # Interleaved, so load from other processes on the machine hits both sides alike.
        for _ in range(runs):
            cpu_before = cpu_seconds(server.pid)
            client_s.append(_timed_exec(client))
            server_cpu_s += cpu_seconds(server.pid) - cpu_before
            raw_s.append(raw.run_sync())
    api = latency_summary(client_s)
    base = latency_summary(raw_s)
    p50_ratio = ratio(api["p50_ms"], base["p50_ms"])
    p95_ratio = ratio(api["p95_ms"], base["p95_ms"])
    result = Result(
        name=NAME,
        figure=f"exec p50 {api['p50_ms']:.2f} ms, p95 {api['p95_ms']:.2f} ms",
        baseline=f"raw bwrap p50 {base['p50_ms']:.2f} ms, p95 {base['p95_ms']:.2f} ms",
        ratio=f"p50 {p50_ratio:.2f}x, p95 {p95_ratio:.2f}x",
        target=f"p50 <= {TARGET_P50_RATIO:.1f}x, p95 <= {TARGET_P95_RATIO:.1f}x",
        passed=p50_ratio <= TARGET_P50_RATIO and p95_ratio <= TARGET_P95_RATIO,
        details={
            "client_exec": api,
            "raw_sandbox": base,
            "p50_ratio": p50_ratio,
            "p95_ratio": p95_ratio,
            # The API's own work per call (its process only, not the sandbox's): steadier than
            # latency on a shared machine, and what is left to cut once no sandbox is spawned.
            "server_cpu_ms_per_exec": round(server_cpu_s / runs * 1000, 3),
            "raw_argv": raw.argv,
        },
    )
    result.show()
    print(f"  (server CPU {server_cpu_s / runs * 1000:.2f} ms per exec)")
    return result


def _timed_exec(client: TroveClient) -> float:
    started = time.perf_counter()
    client.exec(COMMAND)
    return time.perf_counter() - started


def main() -> None:
    with launch_server() as server:
        run(server).save()


if __name__ == "__main__":
    main()
