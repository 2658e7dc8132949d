"""The issue's Kubernetes targets, judged from `make bench-k8s` figures, each beside its raw baseline."""

from __future__ import annotations

from typing import Any

from bench.common import Result, ratio

EXEC_P50_MS = 6.0
FIRST_EXEC_WARM_POOL_P50_MS = 150.0
E2B_CREATE_WARM_POOL_P50_MS = 250.0  # issue 17: Sandbox.create + first commands.run


def judge(results: dict[str, Any]) -> list[Result]:
    """One verdict per target whose figures are in ``results`` (a partial run judges what it has)."""
    verdicts = []
    if "exec_api" in results and "exec_raw_fresh_stream" in results:
        api, raw = results["exec_api"], results["exec_raw_fresh_stream"]
        verdicts.append(
            Result(
                name="exec",
                figure=f"p50 {api['p50_ms']:.2f} ms, p95 {api['p95_ms']:.2f} ms",
                baseline=f"raw pod exec p50 {raw['p50_ms']:.2f} ms, p95 {raw['p95_ms']:.2f} ms",
                ratio=f"p50 {ratio(api['p50_ms'], raw['p50_ms']):.2f}x",
                target=f"p50 <= {EXEC_P50_MS:g} ms",
                passed=api["p50_ms"] <= EXEC_P50_MS,
            )
        )
    if "first_exec_new_namespace_warm_pool" in results and "ready_bare_pods" in results:
        first, bare = results["first_exec_new_namespace_warm_pool"], results["ready_bare_pods"]
        cold = results.get("first_exec_new_namespace_cold", {}).get("p50_ms")
        verdicts.append(
            Result(
                name="first_exec_warm_pool",
                figure=f"p50 {first['p50_ms']:.0f} ms, p95 {first['p95_ms']:.0f} ms"
                + (f" (no pool: p50 {cold:.0f} ms)" if cold is not None else ""),
                baseline=f"bare pod create-to-ready p50 {bare['p50_ms']:.0f} ms",
                ratio=f"p50 {ratio(first['p50_ms'], bare['p50_ms']):.2f}x",
                target=f"p50 <= {FIRST_EXEC_WARM_POOL_P50_MS:g} ms",
                passed=first["p50_ms"] <= FIRST_EXEC_WARM_POOL_P50_MS,
            )
        )
    if "e2b_create_first_run_warm_pool" in results and "first_exec_new_namespace_warm_pool" in results:
        e2b, first = results["e2b_create_first_run_warm_pool"], results["first_exec_new_namespace_warm_pool"]
        verdicts.append(
            Result(
                name="e2b_create_warm_pool",
                figure=f"create + first run p50 {e2b['p50_ms']:.0f} ms, p95 {e2b['p95_ms']:.0f} ms",
                baseline=f"trove-sdk first exec in a new namespace p50 {first['p50_ms']:.0f} ms",
                ratio=f"p50 {ratio(e2b['p50_ms'], first['p50_ms']):.2f}x",
                target=f"p50 <= {E2B_CREATE_WARM_POOL_P50_MS:g} ms",
                passed=e2b["p50_ms"] <= E2B_CREATE_WARM_POOL_P50_MS,
            )
        )
    if "concurrent_exec" in results:
        api = results["concurrent_exec"]
        raw = results.get("concurrent_exec_raw", {})
        verdicts.append(
            Result(
                name="concurrent_exec",
                figure=f"{api['errors']} errors/{api['execs']}, wall {api['wall_s']:.2f} s",
                baseline=(
                    f"raw pod exec {raw['errors']} errors, wall {raw['wall_s']:.2f} s"
                    if raw
                    else "not measured"
                ),
                ratio=f"wall {ratio(api['wall_s'], raw['wall_s']):.2f}x" if raw else "n/a",
                target=f"zero errors ({api['namespaces']} namespaces)",
                passed=api["errors"] == 0,
            )
        )
    return verdicts
