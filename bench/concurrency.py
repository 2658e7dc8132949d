"""50 concurrent execs over 10 namespaces through AsyncTroveClient vs 50 concurrent raw sandbox spawns.

Each exec's output is checked: a wrong answer counts as an error like an exception does.
"""

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
NAMESPACES = [f"bench-concurrent-{i}" for i in range(10)]
COMMAND = "echo ok"
EXPECTED = "ok\n"
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
    output = await client.exec(COMMAND)
    took = time.perf_counter() - started
    if output != EXPECTED:
        raise RuntimeError(f"exec answered {output[:200]!r}, expected {EXPECTED!r}")
    return took


def _settle(raws: list[RawSandbox]) -> None:
    for raw in raws:
        raw.settle()


async def _measure(
    clients: list[AsyncTroveClient], raws: list[RawSandbox], n: int, rounds: int
) -> tuple[_Side, _Side]:
    api, base = _Side(), _Side()

    def api_calls() -> list[Awaitable[float]]:
        return [_timed_exec(clients[i % len(clients)]) for i in range(n)]

    def raw_calls() -> list[Awaitable[float]]:
        return [raws[i % len(raws)].run_async() for i in range(n)]

    await _Side().round(api_calls())  # warm-up: opens connections
    _settle(raws)
    await _Side().round(raw_calls())
    for _ in range(rounds):
        _settle(raws)
        await api.round(api_calls())
        _settle(raws)
        await base.round(raw_calls())
    return api, base


async def _measure_with_clients(
    server: ServerProcess, raws: list[RawSandbox], n: int, rounds: int
) -> tuple[_Side, _Side]:
    clients = [
        AsyncTroveClient(server.workspace_key, namespace, base_url=server.base_url, timeout=120)
        for namespace in NAMESPACES
    ]
    try:
        return await _measure(clients, raws, n, rounds)
    finally:
        for client in clients:
            await client.aclose()


def run(server: ServerProcess, n: int = CONCURRENCY, rounds: int = ROUNDS) -> Result:
    header(
        f"{n} concurrent execs of {COMMAND!r} over {len(NAMESPACES)} namespaces ({rounds} rounds) "
        f"vs {n} concurrent raw sandboxes"
    )
    for namespace in NAMESPACES:
        with TroveClient(server.workspace_key, namespace, base_url=server.base_url) as client:
            client.exec(COMMAND)  # provisions the namespace
    raws = [raw_sandbox(server, namespace, COMMAND) for namespace in NAMESPACES]
    api_side, raw_side = asyncio.run(_measure_with_clients(server, raws, n, rounds))
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
        target=f"zero errors ({len(NAMESPACES)} namespaces)",
        passed=api["errors"] == 0,
        details={
            "concurrency": n,
            "namespaces": len(NAMESPACES),
            "rounds": rounds,
            "api": api,
            "raw": base,
            "wall_ratio": wall_ratio,
        },
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
