"""The TroveNamespace custom resource's coordinates and the label keys shared by API and operator."""

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

GROUP: Final = "trove.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "trovenamespaces"
KIND: Final = "TroveNamespace"
SHORT_NAME: Final = "tns"
POOL_PLURAL: Final = "trovewarmpools"
POOL_KIND: Final = "TroveWarmPool"

LABEL_NAMESPACE: Final = "trove.dev/namespace"
LABEL_WORKSPACE: Final = "trove.dev/workspace"
LABEL_COMPONENT: Final = "trove.dev/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_APP_NAME: Final = "app.kubernetes.io/name"
ANNOTATION_LAST_ACTIVITY: Final = "trove.dev/last-activity"
# On a warm-pool pod and PVC: the pool they wait in (removed when a namespace claims them).
LABEL_POOL: Final = "trove.dev/pool"
# On a TroveNamespace: the pod and PVC it uses, fixed at its first reconcile (its own
# ``-pod``/``-data`` names, or a claimed warm pair's).
ANNOTATION_POD_NAME: Final = "trove.dev/pod-name"
ANNOTATION_PVC_NAME: Final = "trove.dev/pvc-name"
FINALIZER: Final = "trove.dev/cleanup"

# Object names are DNS-1123 labels (≤ 63). Children append at most ``-netpol`` (7), so the
# parent name stays within 63 - 7 = 56: a readable prefix of at most 40 characters, a dash
# and a 12-hex-digit hash of (workspace, namespace).
_PREFIX_MAX: Final = 40
_HASH_CHARS: Final = 12
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def object_name(workspace_id: str, namespace: str) -> str:
    """The TroveNamespace object name for (workspace, namespace): deterministic and DNS-1123 safe.

    The readable prefix is the lowercased, sanitised namespace; the hash covers both parts
    exactly, so ``Alice`` and ``alice`` (or two workspaces' ``alice``) never collide.
    """
    prefix = _UNSAFE.sub("-", namespace.lower()).strip("-")[:_PREFIX_MAX].strip("-") or "ns"
    if not prefix[0].isalpha():
        prefix = "ns-" + prefix
        prefix = prefix[:_PREFIX_MAX].strip("-")
    digest = hashlib.sha256(f"{workspace_id}\x00{namespace}".encode()).hexdigest()[:_HASH_CHARS]
    return f"{prefix}-{digest}"


@dataclass(frozen=True)
class ChildNames:
    """Names of the objects the operator makes for one TroveNamespace."""

    pod: str
    pvc: str
    network_policy: str


def child_names(name: str, annotations: Mapping[str, str] | None = None) -> ChildNames:
    """The children's names; ``annotations`` (the object's) override pod and PVC when claimed."""
    fixed = annotations or {}
    return ChildNames(
        pod=fixed.get(ANNOTATION_POD_NAME) or f"{name}-pod",
        pvc=fixed.get(ANNOTATION_PVC_NAME) or f"{name}-data",
        network_policy=f"{name}-netpol",
    )


def current_phase(obj: Mapping[str, Any]) -> str | None:
    """The status phase, if the status reports on the object's current spec (generation)."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    if generation is not None and status.get("observedGeneration", 0) < generation:
        return None
    phase = status.get("phase")
    return str(phase) if phase is not None else None


def pool_claim_order(pod: Mapping[str, Any]) -> tuple[str, str]:
    """Among a pool's ready members, the one a namespace claims first sorts first (the oldest).

    The operator claims in this order and the API opens agent channels ahead to the first few,
    so both must read it from here.
    """
    meta = pod.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")
