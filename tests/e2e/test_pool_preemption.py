"""A full node: a namespace's pod preempts a waiting pool member, never a namespace's running pod.

The node is filled for real. A pool of two waits at a priority below every other pod (its own
PriorityClass, never preempting, as the chart's ``sandbox.warmPool.yield`` makes); one member is
claimed by a namespace; a filler pod takes every CPU request left. A new namespace with its own
template then fits nowhere: the scheduler evicts the waiting member to place it. The claimed
member has the same (low) priority, since a pod's priority cannot change: the scheduler keeps the
older of equal pods, and the operator claims the oldest member first, so a claimed pod is older
than every member still waiting and goes only after all of them.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from tests.e2e.test_operator import create_tns, phase_is
from tests.e2e.test_warm_pool import create_pool, full, get_pod_or_none, pool_members
from tests.support.cluster import SANDBOX_IMAGE, Cluster, wait_for
from trove_core.crd import GROUP, PLURAL, POOL_PLURAL, VERSION

POOL_STORAGE = "46Mi"  # asked for by no other e2e test: no other namespace claims this pool's members
POOL_PRIORITY = -100  # the chart's warm-pool class
FILLER_PRIORITY = -50  # above the pool (so never the victim here), below namespaces, never preempting


def _priority_class(name: str, value: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name, "labels": {"trove.dev/test": "1"}},
        "value": value,
        "preemptionPolicy": "Never",
    }


@pytest.fixture
def classes(k8s: Cluster) -> Iterator[tuple[str, str]]:
    scheduling = client.SchedulingV1Api(k8s.api)
    suffix = secrets.token_hex(3)
    names = (f"trove-test-pool-{suffix}", f"trove-test-filler-{suffix}")
    for name, value in zip(names, (POOL_PRIORITY, FILLER_PRIORITY), strict=True):
        scheduling.create_priority_class(_priority_class(name, value))
    yield names
    for name in names:
        scheduling.delete_priority_class(name)


def _cpu_left(k8s: Cluster, node: client.V1Node) -> int:
    """Millicores of ``node``'s allocatable CPU that no pod placed on it requests (as the
    scheduler counts: every container of every pod not yet finished, terminating ones too)."""
    pods = k8s.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node.metadata.name}").items
    requested = 0.0
    for pod in pods:
        if pod.status.phase in ("Succeeded", "Failed"):
            continue
        containers = sum(_cpu_requested(c) for c in pod.spec.containers)
        init = max((_cpu_requested(c) for c in pod.spec.init_containers or []), default=0.0)
        requested += max(containers, init)
    allocatable = float(parse_quantity(node.status.allocatable["cpu"]))
    return int((allocatable - requested) * 1000)


def _cpu_requested(container: client.V1Container) -> float:
    return float(parse_quantity((container.resources.requests or {}).get("cpu", "0")))


def _filler(name: str, priority_class: str, millicores: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"trove.dev/test": "1"}},
        "spec": {
            "priorityClassName": priority_class,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
            "containers": [
                {
                    "name": "filler",
                    "image": SANDBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": f"{millicores}m", "memory": "8Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def _running(k8s: Cluster, name: str) -> bool:
    pod = get_pod_or_none(k8s, name)
    return bool(pod is not None and pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None)


def _no_pod_terminating(k8s: Cluster) -> bool:
    return all(p.metadata.deletion_timestamp is None for p in k8s.core.list_pod_for_all_namespaces().items)


def _preempted(k8s: Cluster, pod: str) -> bool:
    events = k8s.core.list_namespaced_event(k8s.namespace, field_selector=f"involvedObject.name={pod}").items
    return any(e.reason == "Preempted" for e in events)


def test_a_full_node_preempts_a_waiting_member_not_a_claimed_one(
    k8s: Cluster, classes: tuple[str, str]
) -> None:
    pool_class, filler_class = classes
    pool = "pool-" + secrets.token_hex(3)
    create_pool(
        k8s,
        pool,
        2,
        {"image": SANDBOX_IMAGE, "imagePullPolicy": "Never", "storage": {"size": POOL_STORAGE}},
        priorityClassName=pool_class,
    )
    filler = "filler-" + secrets.token_hex(3)
    made: list[str] = []
    try:
        wait_for(lambda: full(k8s, pool, 2), timeout=120, what="2 ready members")
        claimer = create_tns(k8s, storage={"size": POOL_STORAGE})
        made.append(claimer)
        claimed = wait_for(lambda: phase_is(k8s, claimer, "Ready"), what="the claimer Ready")["status"]["pod"]
        claimed_pod = k8s.core.read_namespaced_pod(claimed, k8s.namespace)
        claimed_uid = claimed_pod.metadata.uid
        assert claimed_pod.spec.priority == POOL_PRIORITY
        wait_for(lambda: full(k8s, pool, 2), timeout=120, what="the pool refilled")
        waiting = {p.metadata.name for p in pool_members(k8s, pool)}

        # Fill the node: what other tests left must be gone first, or it frees room meanwhile.
        wait_for(lambda: _no_pod_terminating(k8s), timeout=180, what="no pod terminating in the cluster")
        node = k8s.core.list_node().items[0]
        left = _cpu_left(k8s, node)
        assert left > 0, f"the node is already full ({left}m left)"
        k8s.core.create_namespaced_pod(k8s.namespace, _filler(filler, filler_class, left))
        wait_for(lambda: _running(k8s, filler), timeout=120, what="the filler running")
        assert _cpu_left(k8s, node) == 0

        # Another template (storage), so it claims nothing and needs a pod of its own.
        newcomer = create_tns(k8s, storage={"size": "44Mi"})
        made.append(newcomer)
        wait_for(lambda: phase_is(k8s, newcomer, "Ready"), timeout=180, what="the newcomer placed and Ready")

        evicted = {name for name in waiting if _preempted(k8s, name)}
        assert len(evicted) == 1, f"expected one waiting member preempted, got {evicted}"
        assert not any(_preempted(k8s, name) for name in (claimed, filler))
        still = k8s.core.read_namespaced_pod(claimed, k8s.namespace)
        assert still.metadata.uid == claimed_uid
        assert still.metadata.deletion_timestamp is None
        assert phase_is(k8s, claimer, "Ready")
        assert _running(k8s, filler)
    finally:  # the node's room back for the tests after this one
        with contextlib.suppress(ApiException):  # never made, if the test failed before it
            k8s.core.delete_namespaced_pod(filler, k8s.namespace, grace_period_seconds=0)
        for name in made:
            k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name)
        k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, POOL_PLURAL, pool)
        wait_for(lambda: not pool_members(k8s, pool), what="waiting members garbage-collected")
