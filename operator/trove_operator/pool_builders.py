"""Pure warm-pool logic: unassigned sandbox manifests, the claim patches, the replenish plan.

A warm member is a PVC plus a running pod built from the pool's template; its pod spec names
no workspace (see ``builders.build_pod_spec``), so a namespace whose spec yields the very same
pod spec (same spec hash) can take the pair over by relabelling it: no pod start, no volume bind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trove_core.crd import (
    ANNOTATION_POD_NAME,
    LABEL_APP_NAME,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_POOL,
    ChildNames,
    pool_claim_order,
)
from trove_operator import builders
from trove_operator.spec import SandboxTemplate, TroveNamespaceSpec

Manifest = dict[str, Any]

_PREFIX_MAX = 40  # + "-" + 8 hex + "-data" stays a DNS-1123 label (≤ 63)
# The pod spec does not show the volume's size or class; this digest of the PVC spec does.
ANNOTATION_PVC_SPEC_HASH = "trove.dev/pvc-spec-hash"


def member_names(pool: str, token: str) -> ChildNames:
    prefix = pool[:_PREFIX_MAX].rstrip("-")
    return ChildNames(pod=f"{prefix}-{token}-pod", pvc=f"{prefix}-{token}-data", network_policy="")


def pool_policy_name(pool: str) -> str:
    return f"{pool[:_PREFIX_MAX].rstrip('-')}-pool-netpol"


def build_pool_labels(pool: str, component: str) -> dict[str, str]:
    return {
        LABEL_APP_NAME: "trove-sandbox",
        LABEL_MANAGED_BY: "trove-operator",
        LABEL_COMPONENT: component,
        LABEL_POOL: pool,
    }


def build_warm_pvc(pool: str, names: ChildNames, template: SandboxTemplate) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": names.pvc,
            "labels": build_pool_labels(pool, "storage"),
            # Lets the pool tell a PVC whose pod is gone from one whose pod was claimed.
            "annotations": {ANNOTATION_POD_NAME: names.pod},
        },
        "spec": builders.build_pvc_spec(template),
    }


def build_warm_pod(
    pool: str, names: ChildNames, template: SandboxTemplate, priority_class_name: str | None = None
) -> Manifest:
    pod_spec = builders.build_pod_spec(names.pvc, template)
    # Outside the hash: a namespace claims the member by its template, whatever its priority.
    hashed = builders.spec_hash(pod_spec)
    if priority_class_name:
        pod_spec = {**pod_spec, "priorityClassName": priority_class_name}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": names.pod,
            "labels": build_pool_labels(pool, "sandbox"),
            "annotations": {
                builders.ANNOTATION_SPEC_HASH: hashed,
                ANNOTATION_PVC_SPEC_HASH: builders.spec_hash(builders.build_pvc_spec(template)),
            },
        },
        "spec": pod_spec,
    }


def build_pool_network_policy(pool: str) -> Manifest:
    """Waiting pods run nothing: no traffic either way. A claimed pod leaves this policy's
    selector (its pool label goes) and enters its namespace's own."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": pool_policy_name(pool), "labels": build_pool_labels(pool, "network-policy")},
        "spec": {
            "podSelector": {"matchLabels": {LABEL_POOL: pool, LABEL_COMPONENT: "sandbox"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [],
        },
    }


# -- claiming ----------------------------------------------------------------------------------


def claim_name(pod: Manifest) -> str | None:
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if volume.get("name") == "workspace":
            return (volume.get("persistentVolumeClaim") or {}).get("claimName")
    return None


def fits(pod: Manifest, spec: SandboxTemplate) -> bool:
    """Would ``spec`` build exactly this pod (apart from names and labels)?"""
    claim = claim_name(pod)
    if claim is None:
        return False
    have = (pod.get("metadata") or {}).get("annotations") or {}
    return have.get(builders.ANNOTATION_SPEC_HASH) == builders.spec_hash(
        builders.build_pod_spec(claim, spec)
    ) and have.get(ANNOTATION_PVC_SPEC_HASH) == builders.spec_hash(builders.build_pvc_spec(spec))


def is_ready(pod: Manifest) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _usable(pod: Manifest) -> bool:
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not meta.get("deletionTimestamp") and phase not in ("Failed", "Succeeded")


def candidates(pods: list[Manifest], spec: SandboxTemplate) -> list[Manifest]:
    """Waiting pods ``spec`` can take, best first: ready ones, then the oldest."""
    fitting = [p for p in pods if _usable(p) and (p["metadata"].get("labels") or {}).get(LABEL_POOL)]
    fitting = [p for p in fitting if fits(p, spec)]
    return sorted(fitting, key=lambda p: (not is_ready(p), *pool_claim_order(p)))


def build_claim_pod_patch(
    pod: Manifest, name: str, spec: TroveNamespaceSpec, owners: list[Manifest]
) -> list[Manifest]:
    """A JSON patch that fails (``test``) unless the pod is still waiting in its pool."""
    meta = pod["metadata"]
    pool = (meta.get("labels") or {})[LABEL_POOL]
    annotations = dict(meta.get("annotations") or {}) | builders.build_annotations(spec)
    return [
        {"op": "test", "path": "/metadata/labels/" + LABEL_POOL.replace("/", "~1"), "value": pool},
        {"op": "replace", "path": "/metadata/labels", "value": builders.build_labels(name, spec, "sandbox")},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        {"op": "add", "path": "/metadata/ownerReferences", "value": owners},
    ]


def build_claim_pvc_patch(name: str, spec: TroveNamespaceSpec, owners: list[Manifest]) -> list[Manifest]:
    """The PVC joins the namespace; owned by it under ``Delete``, by nothing under ``Retain``."""
    return [
        {"op": "replace", "path": "/metadata/labels", "value": builders.build_labels(name, spec, "storage")},
        {"op": "replace", "path": "/metadata/annotations", "value": builders.build_annotations(spec)},
        {"op": "add", "path": "/metadata/ownerReferences", "value": owners},
    ]


# -- replenishing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Orphan:
    pvc: str
    pod: str | None


@dataclass
class PoolPlan:
    create: int = 0
    delete: list[str] = field(default_factory=list)  # pod names; their PVCs go with them
    # PVCs without a pool pod, each with the pod it was made for: gone, or claimed meanwhile.
    orphans: list[Orphan] = field(default_factory=list)
    warm: int = 0
    ready: int = 0


def plan(size: int, pods: list[Manifest], pvcs: list[Manifest], template: SandboxTemplate) -> PoolPlan:
    """What brings the pool to ``size`` healthy members of the current template."""
    result = PoolPlan()
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    healthy = candidates(live, template)
    healthy_names = {p["metadata"]["name"] for p in healthy}
    result.delete = sorted(p["metadata"]["name"] for p in live if p["metadata"]["name"] not in healthy_names)
    # Past ``size``: drop the worst (not ready, then newest) first.
    keep, extra = healthy[:size], healthy[size:]
    result.delete += [p["metadata"]["name"] for p in extra]
    result.create = size - len(keep)
    result.warm = len(keep)
    result.ready = sum(1 for p in keep if is_ready(p))
    claimed_by_pool_pods = {claim_name(p) for p in pods}
    for pvc in pvcs:
        meta = pvc["metadata"]
        if meta["name"] not in claimed_by_pool_pods and not meta.get("deletionTimestamp"):
            made_for = (meta.get("annotations") or {}).get(ANNOTATION_POD_NAME)
            result.orphans.append(Orphan(meta["name"], made_for))
    result.orphans.sort(key=lambda orphan: orphan.pvc)
    return result


def build_pool_status(plan_: PoolPlan, size: int, generation: int | None) -> Manifest:
    status: Manifest = {"size": size, "warm": plan_.warm, "ready": plan_.ready}
    if generation is not None:
        status["observedGeneration"] = generation
    return status
