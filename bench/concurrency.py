"""50 concurrent execs through AsyncTroveClient vs 50 concurrent raw sandbox spawns."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from trove_sdk import AsyncTroveClient, TroveClient

from bench.common import Result, ServerProcess, header, latency_summary, launch_server, ratio
from bench.sandbox import RawSandbox, raw_sandbox

NAME = "concurrent_exec"
NAMESPACE = "bench-concurrent"
COMMAND = "true"
CONCURRENCY = 50
ROUNDS = 3


@dataclass
class _Side:
    """Outcomes of one side (API or raw) over all rounds."""

    walls: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def round(self, calls: list[Awaitable[float]]) -> None:
        started = time.perf_counter()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        self.walls.append(time.perf_counter() - started)
        self.latencies += [o for o in outcomes if isinstance(o, float)]
        self.errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]

    def summary(self) -> dict[str, Any]:
        return {
            "errors": len(self.errors),
            "error_samples": self.errors[:5],
            "wall_s_median": round(statistics.median(self.walls), 3),
            "wall_s_all": [round(w, 3) for w in self.walls],
            "latency": latency_summary(self.latencies) if self.latencies else {"p50_ms": 0.0, "p95_ms": 0.0},
        }


async def _timed_exec(client: AsyncTroveClient) -> float:
    started = time.perf_counter()
    await client.exec(COMMAND)
    return time.perf_counter() - started


async def _measure(server: ServerProcess, raw: RawSandbox, n: int, rounds: int) -> tuple[_Side, _Side]:
    api, base = _Side(), _Side()
    # httpx's pool allows 100 connections, so the 50 calls are not serialised on the client.
    async with AsyncTroveClient(
        server.workspace_key, NAMESPACE, base_url=server.base_url, timeout=120
    ) as client:
        await _Side().round([_timed_exec(client) for _ in range(n)])  # warm-up: opens connections
        raw.settle()
        await _Side().round([raw.run_async() for _ in range(n)])
        for _ in range(rounds):
            raw.settle()
            await api.round([_timed_exec(client) for _ in range(n)])
            raw.settle()
            await base.round([raw.run_async() for _ in range(n)])
    return api, base


def run(server: ServerProcess, n: int = CONCURRENCY, rounds: int = ROUNDS) -> Result:
    header(f"{n} concurrent execs of {COMMAND!r} ({rounds} rounds) vs {n} concurrent raw sandboxes")
    with TroveClient(server.workspace_key, NAMESPACE, base_url=server.base_url) as client:
        client.exec(COMMAND)  # provisions the namespace
    raw = raw_sandbox(server, NAMESPACE, COMMAND)
    api_side, raw_side = asyncio.run(_measure(server, raw, n, rounds))
    api, base = api_side.summary(), raw_side.summary()
    wall_ratio = ratio(api["wall_s_median"], base["wall_s_median"])
    p50_ratio = ratio(api["latency"]["p50_ms"], base["latency"]["p50_ms"])
    result = Result(
        name=NAME,
        figure=(
            f"{api['errors']} errors/{n * rounds}, wall {api['wall_s_median']:.2f} s, "
            f"p50 {api['latency']['p50_ms']:.0f} ms, p95 {api['latency']['p95_ms']:.0f} ms"
        ),
        baseline=(
            f"raw {base['errors']} errors, wall {base['wall_s_median']:.2f} s, "
            f"p50 {base['latency']['p50_ms']:.0f} ms, p95 {base['latency']['p95_ms']:.0f} ms"
        ),
        ratio=f"wall {wall_ratio:.2f}x, p50 {p50_ratio:.2f}x",
        target="zero errors",
        passed=api["errors"] == 0,
        details={"concurrency": n, "rounds": rounds, "api": api, "raw": base, "wall_ratio": wall_ratio},
    )
    result.show()
    for side in (api, base):
        if side["error_samples"]:
            print(f"  errors, e.g.: {side['error_samples']}")
    return result


def main() -> None:
    with launch_server() as server:
        run(server).save()


if __name__ == "__main__":
    main()
