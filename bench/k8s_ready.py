"""Namespace ready time for `make bench-k8s`: cold, from the warm pool, and bare pods as the floor.

Three bursts of ``count`` objects created at once, each timed from its create call to Ready
(seen on a watch): bare sandbox pods (the kubelet's floor: no PVC, no operator), TroveNamespaces
with no pool, and TroveNamespaces claiming from a TroveWarmPool filled beforehand. Plus the
first SDK call on a brand-new namespace through the API, without and with the pool.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from e2b import Sandbox
from kubernetes import client, watch
from trove_sdk import TroveClient

from bench.common import latency_summary, ratio
from trove_core.crd import GROUP, LABEL_POOL, PLURAL, POOL_PLURAL, VERSION, object_name

Template = dict[str, Any]


def sandbox_template(image: str, storage: str) -> Template:
    """What the bench's API puts in each TroveNamespace (see ``k8s.api_server``)."""
    return {
        "image": image,
        "imagePullPolicy": "Never",
        "storage": {"size": storage},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    }


def _burst(
    count: int,
    create: Callable[[str], None],
    list_call: Callable[..., Any],
    list_args: tuple[Any, ...],
    is_ready: Callable[[Any], bool],
    name_of: Callable[[Any], str],
) -> list[float]:
    names = [f"b{secrets.token_hex(4)}-{i}" for i in range(count)]
    started: dict[str, float] = {}
    done: dict[str, float] = {}

    def go(name: str) -> None:
        started[name] = time.monotonic()
        create(name)

    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    w = watch.Watch()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 240
    for event in w.stream(list_call, *list_args, timeout_seconds=240):
        obj = event["object"]
        name = name_of(obj)
        if name in started and name not in done and is_ready(obj):
            done[name] = time.monotonic() - started[name]
        if len(done) == count or time.monotonic() > deadline:
            w.stop()
    for thread in threads:
        thread.join()
    return list(done.values())


def bare_pods(core: client.CoreV1Api, namespace: str, image: str, count: int) -> list[float]:
    def create(name: str) -> None:
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": name, "labels": {"bench": "bare"}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "sandbox",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["sleep", "infinity"],
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        }
                    ],
                },
            },
        )

    def ready(pod: Any) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))

    took = _burst(count, create, core.list_namespaced_pod, (namespace,), ready, lambda p: p.metadata.name)
    core.delete_collection_namespaced_pod(namespace, label_selector="bench=bare", grace_period_seconds=0)
    return took


def namespaces(
    custom: client.CustomObjectsApi, namespace: str, template: Template, count: int
) -> tuple[list[float], list[str]]:
    """CR create → Ready for a burst; also which pods they got (to count pool hits)."""
    names: list[str] = []

    def create(name: str) -> None:
        crname = object_name("ws-bench", name)
        names.append(crname)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TroveNamespace",
            "metadata": {"name": crname},
            "spec": {"workspaceId": "ws-bench", "namespace": name, **template},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    pods: dict[str, str] = {}

    def ready(obj: Any) -> bool:
        status = obj.get("status") or {}
        if status.get("phase") == "Ready":
            pods[obj["metadata"]["name"]] = status.get("pod") or ""
            return True
        return False

    took = _burst(
        count,
        create,
        custom.list_namespaced_custom_object,
        (GROUP, VERSION, namespace, PLURAL),
        ready,
        lambda o: str((o.get("spec") or {}).get("namespace")),
    )
    for crname in names:
        with contextlib.suppress(Exception):
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, crname)
    return took, list(pods.values())


def fill_pool(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, namespace: str, template: Template, size: int
) -> str:
    """Create a TroveWarmPool and wait until ``size`` members are ready."""
    pool = "bench-pool"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TroveWarmPool",
        "metadata": {"name": pool},
        "spec": {"size": size, "template": template},
    }
    with contextlib.suppress(client.ApiException):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, body)
    wait_pool(core, namespace, pool, size)
    return pool


def wait_pool(core: client.CoreV1Api, namespace: str, pool: str, size: int, timeout: float = 300) -> None:
    """Until ``size`` members are Ready, read off the pods (the pool's status lags by a tick)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=f"{LABEL_POOL}={pool}").items
        ready = [
            p
            for p in pods
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
        ]
        if len(ready) >= size:
            return
        time.sleep(0.5)
    raise RuntimeError(f"warm pool {pool} not at {size} ready after {timeout:.0f}s")


def pool_members(core: client.CoreV1Api, namespace: str, pool: str) -> set[str]:
    return {
        p.metadata.name
        for p in core.list_namespaced_pod(namespace, label_selector=f"{LABEL_POOL}={pool}").items
    }


def wait_idle(core: client.CoreV1Api, namespace: str, keep: set[str], timeout: float = 180) -> None:
    """Wait until the only pods left are ``keep`` and pool members (a burst is gone before the next)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace).items
        left = {p.metadata.name for p in pods if LABEL_POOL not in (p.metadata.labels or {})} - keep
        if not left:
            return
        time.sleep(0.5)
    raise RuntimeError(f"pods still there after {timeout:.0f}s")


def first_calls(base_url: str, key: str, count: int) -> list[float]:
    """Sequential brand-new namespaces: seconds for each one's first ``exec`` through the SDK."""
    took = []
    for _ in range(count):
        with TroveClient(
            api_key=key, namespace=f"first-{secrets.token_hex(4)}", base_url=base_url, timeout=60
        ) as trove:
            started = time.perf_counter()
            trove.exec("true")
            took.append(time.perf_counter() - started)
    return took


def e2b_creates(base_url: str, key: str, count: int) -> list[float]:
    """Sequential ``Sandbox.create`` + first ``commands.run("true")`` through the e2b SDK (killed
    after, untimed: the pool refills before the next)."""
    os.environ["E2B_API_URL"] = os.environ["E2B_SANDBOX_URL"] = f"{base_url}/e2b"
    os.environ["E2B_API_KEY"] = key
    took = []
    for _ in range(count):
        started = time.perf_counter()
        sbx = Sandbox.create()
        sbx.commands.run("true")
        took.append(time.perf_counter() - started)
        sbx.kill()
    return took


def run(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    template: Template,
    base_url: str,
    key: str,
    count: int = 20,
) -> dict[str, Any]:
    """All ready-time figures; ``namespace`` should hold nothing else but the API's own pods."""
    results: dict[str, Any] = {}
    keep = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}
    bare = bare_pods(core, namespace, str(template["image"]), count)
    wait_idle(core, namespace, keep)
    cold, _ = namespaces(custom, namespace, template, count)
    wait_idle(core, namespace, keep)
    results["first_exec_new_namespace_cold"] = latency_summary(first_calls(base_url, key, 10))
    keep = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}

    pool = fill_pool(core, custom, namespace, template, count)
    members = pool_members(core, namespace, pool)
    warm, pods = namespaces(custom, namespace, template, count)
    hits = sum(1 for p in pods if p in members)
    wait_idle(core, namespace, keep)
    wait_pool(core, namespace, pool, count)
    results["first_exec_new_namespace_warm_pool"] = latency_summary(first_calls(base_url, key, 10))
    wait_pool(core, namespace, pool, count)
    results["e2b_create_first_run_warm_pool"] = latency_summary(e2b_creates(base_url, key, 10))
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, pool)

    bare_summary = latency_summary(bare)
    results["ready_bare_pods"] = {**bare_summary, "created": count, "ready": len(bare)}
    for key_, took in (("create_to_ready_cold", cold), ("create_to_ready_warm_pool", warm)):
        summary = latency_summary(took)
        results[key_] = {
            **summary,
            "created": count,
            "ready": len(took),
            "p50_ratio_over_bare_pods": ratio(summary["p50_ms"], bare_summary["p50_ms"]),
        }
    results["create_to_ready_warm_pool"]["claimed_from_pool"] = hits
    return results
