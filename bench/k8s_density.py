"""`make bench-density`: how many TroveNamespaces one node holds, each answering its next call.

Issue 16, item 1: on our two-core node (kubelet limit 110 pods) ``DENSITY_COUNT`` namespaces
(default 500) are created through the API, each used once (one exec), then each is called again.
Only about a hundred pods fit at once, so most namespaces must give their pod up (the idle limit,
or the operator suspending the least recently used idle one when a pod cannot be placed) and get
it back on their next call; a caller meanwhile gets 503 + Retry-After and retries as told.

The operator and the API run with their production defaults (idle check 30 s, re-sync 300 s,
idle limit 300 s, make room after 150 s idle). Figures:
  time to the first exec of a new namespace (retries included) for namespaces 1-100, 101-300,
  301-500; the same for the second call of each; errors (a call that never answered);
  the operator's CPU over a quiet minute with every namespace created, and over the whole run;
  node memory in use (MemTotal - MemAvailable: the node is this machine) before and at the end;
  per namespace: a suspended one holds its PVC only (bytes on disk), a warm one its pod (the
  kubelet's working set), an active one the same pod running a command;
  baseline: bare pods of the same image (``k8s_ready.bare_pods``), created 100 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from tests.support.cluster import start_operator
from trove_sdk import AsyncTroveClient
from trove_sdk.exceptions import TroveServerError

from bench import k8s_ready
from bench.common import RESULTS_DIR, latency_summary
from bench.k8s import IMAGE, api_server, bench_cluster, tear_down

COUNT = int(os.environ.get("DENSITY_COUNT", "500"))
CONCURRENCY = int(os.environ.get("DENSITY_CONCURRENCY", "8"))
CALL_DEADLINE_S = 900.0  # a call that has not answered after this (retries included) is an error
TRANCHES = ((1, 100), (101, 300), (301, 500))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _node_memory_used() -> int:
    info = {
        line.split(":")[0]: int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
    }
    return info["MemTotal"] - info["MemAvailable"]


async def _call(trove: AsyncTroveClient, command: str) -> tuple[float, int, str | None]:
    """Seconds until the call answered (retrying 503s after Retry-After), retries, error."""
    started = time.perf_counter()
    retries = 0
    while True:
        try:
            await trove.exec(command)
            return time.perf_counter() - started, retries, None
        except TroveServerError as exc:
            if exc.status_code != 503 or time.perf_counter() - started > CALL_DEADLINE_S:
                return time.perf_counter() - started, retries, f"{exc.status_code}: {str(exc)[:200]}"
            retries += 1
            await asyncio.sleep(3)  # trove-sdk does not expose Retry-After (5 s from us); a bit sooner


async def _pass(base_url: str, key: str, command: str) -> list[tuple[float, int, str | None]]:
    """One call to each of the ``COUNT`` namespaces, ``CONCURRENCY`` at a time, in order."""
    results: list[tuple[float, int, str | None]] = [(0.0, 0, None)] * COUNT
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(COUNT):
        queue.put_nowait(i)

    done, began = [0], time.monotonic()

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            async with AsyncTroveClient(
                api_key=key, namespace=f"d{i}", base_url=base_url, timeout=60
            ) as trove:
                results[i] = await _call(trove, command)
            done[0] += 1
            if done[0] % 50 == 0:  # a long run shows how it goes
                errors = sum(1 for *_, e in results if e is not None)
                elapsed = time.monotonic() - began
                print(f"  {command!r}: {done[0]}/{COUNT} in {elapsed:.0f} s, {errors} errors", flush=True)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results


def _tranches(results: list[tuple[float, int, str | None]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for first, last in TRANCHES:
        chunk = results[first - 1 : min(last, len(results))]
        if not chunk:
            continue
        answered = [seconds for seconds, _, error in chunk if error is None]
        out[f"{first}-{last}"] = {
            **(latency_summary(answered) if answered else {}),
            "retries": sum(r for _, r, _ in chunk),
            "errors": sum(1 for *_, error in chunk if error is not None),
        }
    out["errors"] = sum(1 for *_, error in results if error is not None)
    out["error_samples"] = [error for *_, error in results if error is not None][:3]
    return out


def _pod_working_sets(core: client.CoreV1Api, namespace: str) -> dict[str, int]:
    """The kubelet's working set per sandbox pod (its summary API, through the API server)."""
    node = core.list_node().items[0].metadata.name
    # Unparsed: the client would hand back the repr of a dict, not JSON.
    raw = core.connect_get_node_proxy_with_path(node, "stats/summary", _preload_content=False)
    summary = json.loads(raw.data)
    return {
        pod["podRef"]["name"]: int((pod.get("memory") or {}).get("workingSetBytes") or 0)
        for pod in summary.get("pods", [])
        if pod["podRef"]["namespace"] == namespace
    }


def _claim_bytes(core: client.CoreV1Api, namespace: str) -> list[int]:
    """Bytes on disk of each claim's host-path volume (the test cluster's storage)."""
    sizes = []
    for pv in core.list_persistent_volume().items:
        claim = pv.spec.claim_ref
        if claim is None or claim.namespace != namespace or pv.spec.host_path is None:
            continue
        path = pv.spec.host_path.path
        used = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=False).stdout
        if used:
            sizes.append(int(used.split()[0]))
    return sizes


async def _costs(core: client.CoreV1Api, namespace: str, base_url: str, key: str) -> dict[str, Any]:
    async with AsyncTroveClient(api_key=key, namespace="d0", base_url=base_url, timeout=60) as trove:
        await _call(trove, "true")
        warm = _pod_working_sets(core, namespace)
        busy = asyncio.ensure_future(
            _call(trove, "python3 -c 'import time; x = bytearray(8 << 20); time.sleep(4)'")
        )
        await asyncio.sleep(2.5)
        active = _pod_working_sets(core, namespace)
        await busy
    warm_sets = sorted(v for v in warm.values() if v)
    claims = _claim_bytes(core, namespace)
    return {
        "warm_pod_working_set_mb_median": round(warm_sets[len(warm_sets) // 2] / 2**20, 1)
        if warm_sets
        else None,
        "warm_pods": len(warm_sets),
        "active_pod_working_set_mb_max": round(max(active.values(), default=0) / 2**20, 1),
        "suspended_claim_bytes_median": sorted(claims)[len(claims) // 2] if claims else None,
        "claims": len(claims),
    }


def main() -> int:
    made = bench_cluster("bench-density", "trove-density")
    if made is None:
        return 2
    kubeconfig, _, core, custom, namespace = made
    # The production pace, not the tests' quick one (start_operator's defaults yield to these).
    os.environ.update(
        TROVE_OPERATOR_IDLE_CHECK_S="30", TROVE_OPERATOR_RESYNC_S="300", TROVE_OPERATOR_POOL_CHECK_S="5"
    )
    log_path = Path(tempfile.gettempdir()) / f"{namespace}-operator.log"
    results: dict[str, Any] = {"namespaces": COUNT, "concurrency": CONCURRENCY}
    _wait_for_token(core, namespace)
    memory_before = _node_memory_used()
    baseline = k8s_ready.bare_pods(core, namespace, IMAGE, 100)
    results["baseline_bare_pods_ready"] = latency_summary(baseline)
    k8s_ready.wait_idle(core, namespace, set())
    operator = start_operator(kubeconfig, namespace, log_path)
    try:
        with api_server(namespace, kubeconfig) as (base_url, _workspace, key, _server_pid):
            cpu_start, run_start = _cpu_s(operator.pid), time.monotonic()
            first = asyncio.run(_pass(base_url, key, "true"))
            results["first_exec"] = _tranches([(s, r, e) for s, r, e in first])
            results["first_pass_s"] = round(time.monotonic() - run_start, 1)
            _save(results)
            quiet_cpu = _cpu_s(operator.pid)
            time.sleep(60)
            results["operator_cpu_quiet_minute_pct"] = round((_cpu_s(operator.pid) - quiet_cpu) / 60 * 100, 2)
            second_start = time.monotonic()
            second = asyncio.run(_pass(base_url, key, "true"))
            results["next_call"] = _tranches(second)
            results["second_pass_s"] = round(time.monotonic() - second_start, 1)
            elapsed = time.monotonic() - run_start
            results["operator_cpu_whole_run_pct"] = round(
                (_cpu_s(operator.pid) - cpu_start) / elapsed * 100, 2
            )
            results["node_memory_used_mb"] = {
                "before": round(memory_before / 2**20),
                "at_end": round(_node_memory_used() / 2**20),
            }
            _save(results)  # a long run's figures so far are kept whatever fails next
            try:
                results["per_namespace"] = asyncio.run(_costs(core, namespace, base_url, key))
            except Exception as exc:  # the counts above stand without it
                results["per_namespace"] = {"error": repr(exc)[:300]}
            phases = [(o.get("status") or {}).get("phase") for o in _list_tns(custom, namespace)]
            results["phases_at_end"] = {p or "none": phases.count(p) for p in set(phases)}
    finally:
        tear_down(made, operator)
    print(json.dumps(results, indent=2))
    _save(results)
    errors = results["first_exec"]["errors"] + results["next_call"]["errors"]
    print(f"\n== {COUNT} namespaces: {errors} calls never answered (target 0)")
    return 0 if errors == 0 else 1


def _save(results: dict[str, Any]) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "k8s_density.json").write_text(json.dumps(results, indent=2) + "\n")


def _wait_for_token(core: client.CoreV1Api, namespace: str) -> None:
    """A pod made in a brand-new namespace before its account's token exists is refused."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(client.ApiException):
            if core.read_namespaced_service_account("default", namespace).secrets:
                return
        time.sleep(0.5)


def _list_tns(custom: client.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    from trove_core.crd import GROUP, PLURAL, VERSION

    found = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return list(found.get("items") or [])


if __name__ == "__main__":
    raise SystemExit(main())
