"""A full node (issue 16, item 1): a namespace whose pod cannot be scheduled gets the least
recently used idle namespace suspended by the operator, instead of waiting for the idle limit.

"Full" without filling the shared node: the waiting namespace asks for more CPU than the node
has, which the scheduler reports exactly as a full node (Unschedulable, Insufficient cpu).
"""

from __future__ import annotations

from typing import Any, cast

from tests.e2e.test_operator import create_tns, get_tns, phase_is
from tests.support.cluster import Cluster, wait_for
from trove_core.crd import ANNOTATION_LAST_ACTIVITY, GROUP, PLURAL, VERSION

LONG_AGO = "2016-01-01T00:00:00Z"  # older than any other namespace a shared run may hold


def ready_reason(obj: dict[str, Any]) -> str | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return cast(str | None, condition.get("reason"))
    return None


def test_an_unschedulable_pod_gets_the_lru_idle_namespace_suspended(k8s: Cluster) -> None:
    idle = create_tns(k8s, idleSuspendSeconds=0)  # never suspended for idleness on its own
    recent = create_tns(k8s, idleSuspendSeconds=0)
    wait_for(lambda: phase_is(k8s, idle, "Ready"), timeout=120, what="the idle namespace Ready")
    wait_for(lambda: phase_is(k8s, recent, "Ready"), timeout=120, what="the recent namespace Ready")
    patch = {"metadata": {"annotations": {ANNOTATION_LAST_ACTIVITY: LONG_AGO}}}
    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, idle, patch)
    huge = {"requests": {"cpu": "100", "memory": "64Mi"}, "limits": {"cpu": "100", "memory": "1Gi"}}
    waiting = create_tns(k8s, resources=huge)
    wait_for(
        lambda: ready_reason(get_tns(k8s, waiting)) == "Unschedulable",
        timeout=120,
        what="the waiting namespace reported Unschedulable",
    )
    wait_for(lambda: get_tns(k8s, idle)["spec"].get("suspended") is True, timeout=60, what="LRU suspended")
    wait_for(lambda: phase_is(k8s, idle, "Suspended"), timeout=120, what="the LRU's pod stopped")
    assert not get_tns(k8s, recent)["spec"].get("suspended")
    assert not get_tns(k8s, waiting)["spec"].get("suspended")
