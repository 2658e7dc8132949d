"""100 concurrent clients (the official async SDK) for 60 s: errors by status, latency, memory."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict

import httpx
from trove_sdk import AsyncTroveClient
from trove_sdk.exceptions import TroveError

from tests.chaos.report import CaseReport
from tests.chaos.server import Server, running

CLIENTS = int(os.environ.get("CHAOS_LOAD_CLIENTS", "100"))
DURATION_S = float(os.environ.get("CHAOS_LOAD_S", "60"))
NAMESPACES = 10
# write, read, list, exec: a mix like an agent's (exec spawns a sandbox, so it is the heaviest).
MIX = (("write", 35), ("read", 30), ("list", 15), ("exec", 20))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def _p50_p95(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5) * 1000:.0f} ms / p95 {percentile(values, 0.95) * 1000:.0f} ms"


class Tally:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.outcomes: Counter[str] = Counter()


async def _client(server: Server, number: int, until: float, tally: Tally) -> None:
    assert server.keys is not None
    rng = random.Random(number)
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    mine: list[str] = []
    async with AsyncTroveClient(
        api_key=server.keys.workspace, namespace=f"load-{number % NAMESPACES}", base_url=server.base_url
    ) as client:
        n = 0
        while time.monotonic() < until:
            kind = rng.choice(kinds)
            if kind in ("read", "list") and not mine:
                kind = "write"
            started = time.monotonic()
            try:
                if kind == "write":
                    path = f"c{number}/f{n % 20}.txt"
                    await client.write(path, f"client {number} write {n}\n" * rng.randint(1, 200))
                    mine.append(path)
                elif kind == "read":
                    await client.read(rng.choice(mine))
                elif kind == "list":
                    await client.list_dir(f"workspace/c{number}")
                else:
                    await client.exec_detailed(f"wc -c workspace/c{number}/* | tail -1")
                outcome = "ok"
            except TroveError as exc:
                outcome = str(exc.status_code or type(exc).__name__)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            tally.latencies[kind].append(time.monotonic() - started)
            tally.outcomes[outcome] += 1
            n += 1


async def _run(server: Server, tally: Tally, peak: list[int]) -> None:
    until = time.monotonic() + DURATION_S

    async def sample_rss() -> None:
        while time.monotonic() < until:
            peak.append(server.rss_kib() or 0)
            await asyncio.sleep(1)

    await asyncio.gather(sample_rss(), *(_client(server, n, until, tally) for n in range(CLIENTS)))


def concurrent_clients(report: CaseReport) -> None:
    with running("load") as server:
        rss_before = server.rss_kib()
        tally = Tally()
        peak: list[int] = []
        started = time.monotonic()
        asyncio.run(_run(server, tally, peak))
        elapsed = time.monotonic() - started
        time.sleep(2)
        rss_after = server.rss_kib()
        healthy = httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
    everything = [t for values in tally.latencies.values() for t in values]
    errors = {k: v for k, v in tally.outcomes.items() if k != "ok"}
    report.fact(
        f"{CLIENTS} clients (official AsyncTroveClient) over {NAMESPACES} namespaces for {elapsed:.0f} s: "
        f"{len(everything)} requests ({len(everything) / elapsed:.0f}/s), errors {sum(errors.values())} "
        f"by status {errors or '{}'}"
    )
    report.fact(
        f"latency {_p50_p95(everything)}; "
        + ", ".join(
            f"{kind} n={len(values)} {_p50_p95(values)}" for kind, values in sorted(tally.latencies.items())
        )
    )
    report.fact(f"server RSS before {rss_before} KiB, peak {max(peak, default=0)} KiB, after {rss_after} KiB")
    server_errors = {k: v for k, v in errors.items() if not k.isdigit() or int(k) >= 500}
    report.check("no 5xx or dropped connections under load", not server_errors, f"{server_errors}")
    report.check("every request answered without error", not errors, f"{errors}")
    report.check("server ready after the load", healthy)
