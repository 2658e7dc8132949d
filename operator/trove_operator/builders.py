"""Pure manifest builders: TroveNamespace spec in, PVC / Pod / NetworkPolicy / status dicts out.

No kopf and no client here (import-linter enforces it): handlers adopt and create what these
return, and unit tests compare them with golden YAML.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from trove_core.crd import (
    LABEL_APP_NAME,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAMESPACE,
    LABEL_WORKSPACE,
    ChildNames,
)
from trove_operator.spec import SandboxTemplate, TroveNamespaceSpec

SANDBOX_UID = 1000
WORKSPACE_MOUNT = "/workspace"
ANNOTATION_SPEC_HASH = "trove.dev/pod-spec-hash"
ANNOTATION_WORKSPACE_ID = "trove.dev/workspace-id"
ANNOTATION_NAMESPACE = "trove.dev/namespace-name"
_TMP_SIZE = "256Mi"

Manifest = dict[str, Any]


def build_labels(name: str, spec: TroveNamespaceSpec, component: str) -> dict[str, str]:
    """Labels every child carries; label values must be ≤ 63 chars, so full ids go in annotations."""
    return {
        LABEL_APP_NAME: "trove-sandbox",
        LABEL_MANAGED_BY: "trove-operator",
        LABEL_NAMESPACE: name,
        LABEL_WORKSPACE: _label_value(spec.workspace_id),
        LABEL_COMPONENT: component,
    }


def _label_value(value: str) -> str:
    if len(value) <= 63:
        return value
    return value[:50].rstrip("-_") + "-" + hashlib.sha256(value.encode()).hexdigest()[:12]


def build_annotations(spec: TroveNamespaceSpec) -> dict[str, str]:
    return {ANNOTATION_WORKSPACE_ID: spec.workspace_id, ANNOTATION_NAMESPACE: spec.namespace}


def build_pvc(name: str, children: ChildNames, spec: TroveNamespaceSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": children.pvc,
            "labels": build_labels(name, spec, "storage"),
            "annotations": build_annotations(spec),
        },
        "spec": build_pvc_spec(spec),
    }


def build_pvc_spec(spec: SandboxTemplate) -> Manifest:
    pvc_spec: Manifest = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name:
        pvc_spec["storageClassName"] = spec.storage.storage_class_name
    return pvc_spec


def _drop_all() -> Manifest:
    return {"drop": ["ALL"]}


def build_pod(name: str, children: ChildNames, spec: TroveNamespaceSpec) -> Manifest:
    """The sandbox pod: non-root, no capabilities, no token, read-only root, PVC at /workspace."""
    pod_spec = build_pod_spec(children.pvc, spec)
    annotations = build_annotations(spec)
    annotations[ANNOTATION_SPEC_HASH] = spec_hash(pod_spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": children.pod,
            "labels": build_labels(name, spec, "sandbox"),
            "annotations": annotations,
        },
        "spec": pod_spec,
    }


def build_pod_spec(claim_name: str, spec: SandboxTemplate) -> Manifest:
    """The pod spec proper: it names no workspace, so a warm-pool pod can be claimed by one later."""
    resources = {
        "requests": {"cpu": spec.resources.requests.cpu, "memory": spec.resources.requests.memory},
        "limits": {"cpu": spec.resources.limits.cpu, "memory": spec.resources.limits.memory},
    }
    workspace = {"name": "workspace", "mountPath": WORKSPACE_MOUNT}
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Always",
        # Deletes (suspend, spec change) should not wait 30 s for a shell that ignores TERM.
        "terminationGracePeriodSeconds": 1,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SANDBOX_UID,
            "runAsGroup": SANDBOX_UID,
            "fsGroup": SANDBOX_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # hostPath-backed volumes ignore fsGroup and arrive root-owned 0750: this container
        # only chowns the volume root, as root but with CAP_CHOWN alone.
        "initContainers": [
            {
                "name": "own-workspace",
                "image": spec.image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": ["chown", f"{SANDBOX_UID}:{SANDBOX_UID}", WORKSPACE_MOUNT],
                "securityContext": {
                    "runAsUser": 0,
                    "runAsNonRoot": False,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
                },
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"cpu": "100m", "memory": "64Mi"},
                },
                "volumeMounts": [workspace],
            }
        ],
        "containers": [
            {
                "name": "sandbox",
                "image": spec.image,
                "imagePullPolicy": spec.image_pull_policy,
                # PID 1 only idles; commands arrive through the exec API (the warm agent or bash).
                "command": ["sleep", "infinity"],
                "workingDir": "/",
                "env": [
                    {"name": "HOME", "value": WORKSPACE_MOUNT},
                    {"name": "LANG", "value": "C.UTF-8"},
                    {"name": "TERM", "value": "dumb"},
                    {"name": "USER", "value": "agent"},
                ],
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": SANDBOX_UID,
                    "runAsGroup": SANDBOX_UID,
                    "allowPrivilegeEscalation": False,
                    "privileged": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": _drop_all(),
                },
                "resources": resources,
                "volumeMounts": [workspace, {"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": claim_name}},
            {"name": "tmp", "emptyDir": {"sizeLimit": _TMP_SIZE}},
        ],
    }
    return pod_spec


def spec_hash(pod_spec: Manifest) -> str:
    """A digest of what we asked for; a pod whose annotation differs is out of date."""
    return hashlib.sha256(json.dumps(pod_spec, sort_keys=True).encode()).hexdigest()[:16]


def build_network_policy(name: str, children: ChildNames, spec: TroveNamespaceSpec) -> Manifest:
    """No ingress at all; egress everywhere (``all``) or nowhere (``none``)."""
    egress: list[Manifest] = [{}] if spec.egress == "all" else []
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": children.network_policy,
            "labels": build_labels(name, spec, "network-policy"),
            "annotations": build_annotations(spec),
        },
        "spec": {
            "podSelector": {"matchLabels": {LABEL_NAMESPACE: name, LABEL_COMPONENT: "sandbox"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }


# -- status ------------------------------------------------------------------------------------

# Container waiting reasons that will not fix themselves: the phase becomes Failed (with an event).
_FATAL_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)


def assess(spec: TroveNamespaceSpec, pvc: Manifest | None, pod: Manifest | None) -> tuple[str, str, str]:
    """``(phase, reason, message)`` for the Ready condition, read off the live children."""
    if spec.suspended:
        if pod is None:
            return "Suspended", "Suspended", "spec.suspended is true: the pod is stopped, the PVC kept"
        return "Suspended", "Stopping", "spec.suspended is true: the pod is being stopped"
    if pvc is not None and (pvc.get("status") or {}).get("phase") not in ("Bound", None):
        claim = pvc["metadata"]["name"]
        return "Pending", "PVCNotBound", f"PersistentVolumeClaim {claim} is not bound yet"
    if pod is None:
        return "Pending", "PodCreating", "the sandbox pod is being created"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Pending", "PodTerminating", "the previous sandbox pod is terminating"
    status = pod.get("status") or {}
    statuses = list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])
    for container in statuses:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in _FATAL_WAITING:
            message = waiting.get("message") or waiting["reason"]
            return "Failed", waiting["reason"], f"container {container.get('name')}: {message}"
        terminated = state.get("terminated") or {}
        if terminated and terminated.get("exitCode", 0) != 0 and container.get("name") == "own-workspace":
            return "Failed", "InitFailed", f"chown of the volume failed: {terminated.get('reason', '')}"
    phase = status.get("phase")
    if phase in ("Failed", "Succeeded"):
        return "Pending", "PodRestarting", f"the sandbox pod ended ({phase}); it is being recreated"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return "Ready", "PodReady", f"pod {pod['metadata']['name']} is ready"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return "Pending", condition.get("reason") or "Unschedulable", condition.get("message") or ""
    return "Pending", "PodStarting", "the sandbox pod is starting"


def build_status(
    *,
    phase: str,
    reason: str,
    message: str,
    children: ChildNames,
    pod_exists: bool,
    generation: int | None,
    previous: Manifest | None,
    now: str,
    last_activity: str | None = None,
) -> Manifest:
    """The status subresource; the Ready condition keeps its transition time while unchanged."""
    ready = "True" if phase == "Ready" else "False"
    transition = now
    for condition in (previous or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == ready:
            transition = condition.get("lastTransitionTime") or now
    status: Manifest = {
        "phase": phase,
        # None, not "": a merge patch then removes the field (the client sends "" as null).
        "pod": children.pod if pod_exists else None,
        "pvc": children.pvc,
        "message": message,
        "conditions": [
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "message": message,
                "lastTransitionTime": transition,
            }
        ],
    }
    if generation is not None:
        status["observedGeneration"] = generation
        status["conditions"][0]["observedGeneration"] = generation
    if last_activity:
        status["lastActivity"] = last_activity
    return status
