"""bench-k8s targets: each judged from its figure, shown beside its raw baseline with the ratio."""

from __future__ import annotations

from typing import Any

from bench.k8s_targets import judge


def _summary(p50: float, p95: float) -> dict[str, float]:
    return {"p50_ms": p50, "p95_ms": p95}


def test_every_target_is_judged_beside_its_baseline() -> None:
    results: dict[str, Any] = {
        "exec_api": _summary(5.5, 9.0),
        "exec_raw_fresh_stream": _summary(11.0, 20.0),
        "first_exec_new_namespace_warm_pool": _summary(160.0, 300.0),
        "first_exec_new_namespace_cold": _summary(4000.0, 6000.0),
        "ready_bare_pods": _summary(2000.0, 2500.0),
        "concurrent_exec": {"execs": 50, "namespaces": 10, "errors": 0, "wall_s": 0.5},
        "concurrent_exec_raw": {"execs": 50, "namespaces": 10, "errors": 1, "wall_s": 2.0},
        "e2b_create_first_run_warm_pool": _summary(240.0, 400.0),
    }
    verdicts = {v.name: v for v in judge(results)}
    assert set(verdicts) == {"exec", "first_exec_warm_pool", "e2b_create_warm_pool", "concurrent_exec"}
    assert verdicts["e2b_create_warm_pool"].passed  # 240 ms <= 250 ms
    assert verdicts["e2b_create_warm_pool"].ratio == "p50 1.50x"  # beside trove-sdk's first exec
    assert verdicts["exec"].passed
    assert verdicts["exec"].ratio == "p50 0.50x"
    assert "11.00" in verdicts["exec"].baseline
    assert not verdicts["first_exec_warm_pool"].passed  # 160 ms > 150 ms
    assert "no pool: p50 4000 ms" in verdicts["first_exec_warm_pool"].figure
    assert verdicts["concurrent_exec"].passed  # the raw side's error does not fail the API's target
    assert verdicts["concurrent_exec"].ratio == "wall 0.25x"


def test_a_partial_run_judges_only_what_it_measured_and_errors_fail() -> None:
    results: dict[str, Any] = {"concurrent_exec": {"execs": 50, "namespaces": 10, "errors": 2, "wall_s": 1.0}}
    (verdict,) = judge(results)
    assert not verdict.passed
    assert verdict.baseline == "not measured"
    assert judge({}) == []
