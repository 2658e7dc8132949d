"""The warm pool against the cluster: keep ``size`` sandboxes waiting, hand one to a new namespace."""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from typing import Any, cast

import kopf
from pydantic import ValidationError

from trove_core.crd import (
    ANNOTATION_POD_NAME,
    ANNOTATION_PVC_NAME,
    LABEL_NAMESPACE,
    LABEL_POOL,
    POOL_PLURAL,
    ChildNames,
)
from trove_operator import pool_builders
from trove_operator.kube import Kube, Manifest, PatchRefusedError
from trove_operator.spec import TroveNamespaceSpec, TroveWarmPoolSpec

log = logging.getLogger(__name__)

# Claims and the pool's deletions must not interleave: a pod being deleted as surplus must
# not be handed out at the same moment. One operator process is active at a time (peering),
# so a process-wide lock is enough; the claim's JSON ``test`` guards the rest.
_members = threading.Lock()
# A pool's timer runs beside its change handlers (kopf does not serialise those), so two
# passes could plan the same shortfall: one pass at a time, across pools (they are few).
_replenishing = threading.Lock()


class MalformedPoolError(kopf.PermanentError):
    """The pool's spec does not parse."""


def parse_pool(body: Manifest) -> TroveWarmPoolSpec:
    try:
        return TroveWarmPoolSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        meta = body.get("metadata") or {}
        raise MalformedPoolError(f"TroveWarmPool {meta.get('namespace')}/{meta.get('name')}: {exc}") from exc


def replenish(kube: Kube, body: Manifest) -> pool_builders.PoolPlan:
    """Delete stale and surplus members, create missing ones, report counts in the status."""
    with _replenishing:
        return _replenish(kube, body)


def _replenish(kube: Kube, body: Manifest) -> pool_builders.PoolPlan:
    meta = body["metadata"]
    pool, namespace = meta["name"], meta["namespace"]
    spec = parse_pool(body)
    owner = cast(Any, body)

    policy = pool_builders.build_pool_network_policy(pool)
    kopf.adopt(policy, owner=owner)
    kube.ensure(namespace, policy)

    with _members:
        pods = kube.select("Pod", namespace, f"{LABEL_POOL}={pool}")
        pvcs = kube.select("PersistentVolumeClaim", namespace, f"{LABEL_POOL}={pool}")
        todo = pool_builders.plan(spec.size, pods, pvcs, spec.template)
        by_name = {p["metadata"]["name"]: p for p in pods}
        for name in todo.delete:
            log.info("warm pool %s/%s: removing %s (stale, ended or surplus)", namespace, pool, name)
            kube.delete_pod(namespace, name)
            claim = pool_builders.claim_name(by_name[name])
            if claim:
                kube.delete_pvc(namespace, claim)
        for orphan in todo.orphans:
            # Its pod is not in the pool: gone (delete the PVC) or just claimed (leave it).
            if not orphan.pod or kube.get("Pod", namespace, orphan.pod) is None:
                kube.delete_pvc(namespace, orphan.pvc)

    # Creating outside the members lock keeps claims fast; ``_replenishing`` keeps a second
    # pass from creating the same members again.
    for _ in range(todo.create):
        names = pool_builders.member_names(pool, secrets.token_hex(4))
        pvc_manifest = pool_builders.build_warm_pvc(pool, names, spec.template)
        pod_manifest = pool_builders.build_warm_pod(pool, names, spec.template, spec.priority_class_name)
        kopf.adopt(pvc_manifest, owner=owner)
        kopf.adopt(pod_manifest, owner=owner)
        kube.ensure(namespace, pvc_manifest)
        kube.ensure(namespace, pod_manifest)

    status = pool_builders.build_pool_status(todo, spec.size, meta.get("generation"))
    if body.get("status") != status:
        kube.patch_status(namespace, pool, status, plural=POOL_PLURAL)
    return todo


@dataclass
class Claimed:
    names: ChildNames
    pod: Manifest  # as patched: the live object, so the caller need not read it again
    pvc: Manifest


def claim(kube: Kube, body: Manifest, spec: TroveNamespaceSpec, policy_name: str) -> Claimed | None:
    """Take over a waiting pod + PVC for this new namespace; ``None`` when none fits."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    owners = [_owner_reference(body)]
    pvc_owners = owners if spec.deletion_policy == "Delete" else []
    taken: Manifest | None = None
    # A claim interrupted after relabelling the pod, before the namespace recorded it (only
    # claims run before a namespace has names, so a pod with its label is such a pod).
    for pod in kube.select("Pod", namespace, f"{LABEL_NAMESPACE}={name}"):
        if pool_builders.claim_name(pod):
            taken = pod
    if taken is None:
        # The pod patch decides who wins; the lock only keeps the pool's own deletions out.
        with _members:
            for pod in pool_builders.candidates(kube.select("Pod", namespace, LABEL_POOL), spec):
                patch = pool_builders.build_claim_pod_patch(pod, name, spec, owners)
                try:
                    taken = kube.json_patch("Pod", namespace, pod["metadata"]["name"], patch)
                except PatchRefusedError as exc:
                    log.info("warm pod %s was taken meanwhile: %s", pod["metadata"]["name"], exc)
                    continue
                break
    if taken is None:
        return None
    pod_name, pvc_name = taken["metadata"]["name"], pool_builders.claim_name(taken)
    assert pvc_name is not None  # only pods with a workspace claim are candidates
    pvc_patch = pool_builders.build_claim_pvc_patch(name, spec, pvc_owners)
    pvc = kube.json_patch("PersistentVolumeClaim", namespace, pvc_name, pvc_patch)
    kube.annotate_tns(namespace, name, {ANNOTATION_POD_NAME: pod_name, ANNOTATION_PVC_NAME: pvc_name})
    log.info("namespace %s/%s claimed warm pod %s", namespace, name, pod_name)
    return Claimed(ChildNames(pod=pod_name, pvc=pvc_name, network_policy=policy_name), taken, pvc)


def _owner_reference(body: Manifest) -> Manifest:
    meta = body["metadata"]
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
