"""First exec in a brand-new namespace (provisioning + its sandbox's start) vs one raw sandbox spawn."""

from __future__ import annotations

import secrets
import time

from trove_sdk import TroveClient

from bench.common import Result, ServerProcess, header, latency_summary, launch_server, ratio
from bench.sandbox import raw_sandbox

NAME = "first_exec"
COMMAND = "true"
RUNS = 30
TARGET_P50_MS = 50.0


def run(server: ServerProcess, runs: int = RUNS) -> Result:
    header(f"first exec of {COMMAND!r} in {runs} brand-new namespaces vs a raw bwrap spawn")
    tag = secrets.token_hex(3)
    with TroveClient(server.workspace_key, f"first-{tag}-warmup", base_url=server.base_url) as client:
        client.exec(COMMAND)  # imports and pools of the very first call are not a namespace's cost
        raw = raw_sandbox(server, f"first-{tag}-warmup", COMMAND)
    raw.run_sync()
    first_s: list[float] = []
    raw_s: list[float] = []
    for i in range(runs):
        # A client per namespace, as an agent gets (its connect to 127.0.0.1 is inside the clock).
        with TroveClient(server.workspace_key, f"first-{tag}-{i}", base_url=server.base_url) as client:
            started = time.perf_counter()
            client.exec(COMMAND)
            first_s.append(time.perf_counter() - started)
        raw_s.append(raw.run_sync())
    api = latency_summary(first_s)
    base = latency_summary(raw_s)
    p50_ratio = ratio(api["p50_ms"], base["p50_ms"])
    result = Result(
        name=NAME,
        figure=f"first exec p50 {api['p50_ms']:.1f} ms, p95 {api['p95_ms']:.1f} ms",
        baseline=f"raw bwrap p50 {base['p50_ms']:.1f} ms, p95 {base['p95_ms']:.1f} ms",
        ratio=f"p50 {p50_ratio:.2f}x",
        target=f"p50 <= {TARGET_P50_MS:g} ms",
        passed=api["p50_ms"] <= TARGET_P50_MS,
        details={"first_exec": api, "raw_sandbox": base, "p50_ratio": p50_ratio, "namespaces": runs},
    )
    result.show()
    return result


def main() -> None:
    with launch_server() as server:
        run(server).save()


if __name__ == "__main__":
    main()
