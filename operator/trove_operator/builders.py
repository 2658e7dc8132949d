"""Pure manifest builders: TroveNamespace spec in, PVC / Pod / NetworkPolicy / status dicts out.

No kopf and no client here (import-linter enforces it): handlers adopt and create what these
return, and unit tests compare them with golden YAML.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from trove_core.crd import (
    LABEL_APP_NAME,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAMESPACE,
    LABEL_WORKSPACE,
    ChildNames,
)
from trove_operator.spec import ResourceAmounts, SandboxTemplate, TroveNamespaceSpec

# Each sandbox pod runs as its own uid, derived from its PVC's name (stable across suspend,
# wake and a warm-pool claim): RLIMIT_NPROC counts processes per uid, node-wide, so only a uid
# of its own makes the agent's process cap a per-sandbox one. Collisions (two sandboxes on one
# uid) are rare in a range this wide and only make two sandboxes share that cap.
SANDBOX_UID_BASE = 1_000_000_000
SANDBOX_UID_SPAN = 1_000_000_000
MAX_PROCESSES_ENV = "TROVE_MAX_PROCESSES"
WORKSPACE_MOUNT = "/workspace"
ANNOTATION_SPEC_HASH = "trove.dev/pod-spec-hash"
ANNOTATION_WORKSPACE_ID = "trove.dev/workspace-id"
ANNOTATION_NAMESPACE = "trove.dev/namespace-name"
_TMP_SIZE = "256Mi"
# The scheduler's words for a pod whose claim has no volume yet (volume binding, all versions).
_UNBOUND_CLAIM = "unbound immediate PersistentVolumeClaims"
# What ``internet`` egress never reaches: link-local (cloud metadata at 169.254.169.254),
# loopback, and (when the operator is told nothing else) the private ranges, where clusters keep
# their pods, Services and nodes. The chart passes the cluster's own ranges on top.
ALWAYS_BLOCKED = ("169.254.0.0/16", "127.0.0.0/8", "fe80::/10", "::1/128")
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")

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


def sandbox_uid(claim_name: str) -> int:
    """The uid (and gid) of the pod that mounts ``claim_name``: below 2^31, as Kubernetes requires."""
    digest = int.from_bytes(hashlib.sha256(claim_name.encode()).digest()[:8], "big")
    return SANDBOX_UID_BASE + digest % SANDBOX_UID_SPAN


def _amounts(amounts: ResourceAmounts) -> dict[str, str]:
    found = {"cpu": amounts.cpu, "memory": amounts.memory}
    if amounts.ephemeral_storage:
        found["ephemeral-storage"] = amounts.ephemeral_storage
    return found


def _own_workspace_script(uid: int) -> str:
    """Chown the volume root; the whole tree only when the root is someone else's (a volume
    made by an older release, whose pods all ran as uid 1000): one walk, once."""
    owner = f"{uid}:{uid}"
    return (
        f'[ "$(stat -c %u:%g {WORKSPACE_MOUNT})" = {owner} ] && exit 0; chown -R -h {owner} {WORKSPACE_MOUNT}'
    )


# PID 1 of the sandbox container, in plain sh (agentless images have no python3). Processes
# exec'd into the pod have a parent outside it; only orphans come up to PID 1: the calls of
# an agent that died together with their supervisors, or strays of the agentless fallback's
# shells. Each second it kills every child it has and reaps them (``wait`` reaps any child),
# so no process outlives its call by more than that, and no zombie piles up. Builtins only
# in the scan (no fork), so every child it sees is an orphan; a comm may hold ")" or a
# newline, so fields are counted from the last ") " of the whole file.
PID1_SCRIPT = """trap 'exit 0' TERM INT
while :; do
  for stat in /proc/[0-9]*/stat; do
    line=
    while IFS= read -r part || [ -n "$part" ]; do line="$line $part"; done 2>/dev/null < "$stat"
    set -- ${line##*) }
    [ "${2:-}" = 1 ] || continue
    pid=${stat#/proc/}
    kill -9 "${pid%/stat}" 2>/dev/null
  done
  sleep 1 &
  wait $!
done"""


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
        "requests": _amounts(spec.resources.requests),
        "limits": _amounts(spec.resources.limits),
    }
    uid = sandbox_uid(claim_name)
    workspace = {"name": "workspace", "mountPath": WORKSPACE_MOUNT}
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Always",
        # Deletes (suspend, spec change) should not wait 30 s for a shell that ignores TERM.
        "terminationGracePeriodSeconds": 1,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # hostPath-backed volumes ignore fsGroup and arrive root-owned 0750: this container
        # chowns the volume, as root but with CAP_CHOWN (and DAC_READ_SEARCH to walk an old
        # tree) alone.
        "initContainers": [
            {
                "name": "own-workspace",
                "image": spec.image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": ["/bin/sh", "-c", _own_workspace_script(uid)],
                "securityContext": {
                    "runAsUser": 0,
                    "runAsNonRoot": False,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_READ_SEARCH"]},
                },
                # ephemeral-storage too: a ResourceQuota on it admits only pods whose every
                # container states it.
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi", "ephemeral-storage": "1Mi"},
                    "limits": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "16Mi"},
                },
                "volumeMounts": [workspace],
            }
        ],
        "containers": [
            {
                "name": "sandbox",
                "image": spec.image,
                "imagePullPolicy": spec.image_pull_policy,
                # PID 1 kills orphans (PID1_SCRIPT); commands arrive through the exec API (the
                # warm agent or bash).
                "command": ["/bin/sh", "-c", PID1_SCRIPT],
                "workingDir": "/",
                "env": [
                    {"name": "HOME", "value": WORKSPACE_MOUNT},
                    {"name": "LANG", "value": "C.UTF-8"},
                    {"name": "TERM", "value": "dumb"},
                    {"name": "USER", "value": "agent"},
                    {"name": MAX_PROCESSES_ENV, "value": str(spec.max_processes)},
                ],
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": uid,
                    "runAsGroup": uid,
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


def build_network_policy(
    name: str, children: ChildNames, spec: TroveNamespaceSpec, blocked: Sequence[str] = ()
) -> Manifest:
    """No ingress at all; egress everywhere (``all``), nowhere (``none``), or (``internet``) to
    every address but ``blocked`` (the cluster's pod, service and node ranges, metadata); the
    spec's ``egressBlocked`` ranges are refused on top of ``all`` and ``internet``, and
    ``egressDns: false`` drops the rule that opens the cluster's resolver through them (E2B's
    deny-all: its ranges then cover the resolver's pods unless an allowed range names them)."""
    extra = [str(cidr) for cidr in spec.egress_blocked]
    dns = spec.egress_dns
    if spec.egress == "none":
        egress: list[Manifest] = []
    elif spec.egress == "all":
        egress = build_internet_egress(extra, dns=dns) if extra else [{}]
    else:
        egress = build_internet_egress([*blocked, *extra], dns=dns)
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


def build_internet_egress(blocked: Sequence[str], *, dns: bool = True) -> list[Manifest]:
    """Egress rules for ``internet``: each family's whole range minus the blocked ranges, plus
    (``dns``) DNS to the cluster's resolver pods (their Service address is in a blocked range).
    A family whose whole range is blocked gets no peer (an ``except`` must lie strictly inside
    its block); with both blocked there is no egress at all, DNS included."""
    excepts: dict[int, list[str]] = {4: [], 6: []}
    for cidr in blocked:
        net = ipaddress.ip_network(cidr, strict=False)
        if str(net) not in excepts[net.version]:
            excepts[net.version].append(str(net))
    peers = [
        {"ipBlock": {"cidr": whole} | ({"except": excepts[version]} if excepts[version] else {})}
        for version, whole in ((4, "0.0.0.0/0"), (6, "::/0"))
        if whole not in excepts[version]
    ]
    if not peers:
        return []
    resolver = {
        "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    return [{"to": peers}, resolver] if dns else [{"to": peers}]


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
            message = condition.get("message") or ""
            if _UNBOUND_CLAIM in message:
                # The moment between a new claim and its volume, which the scheduler also calls
                # Unschedulable: not a full node, so nothing is suspended to make room for it.
                return "Pending", "PVCNotBound", message
            return "Pending", condition.get("reason") or "Unschedulable", message
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
