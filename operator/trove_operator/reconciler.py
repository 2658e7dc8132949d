"""One idempotent pass over a TroveNamespace: children to match the spec, status to match the children."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, cast

import kopf
from pydantic import ValidationError

from trove_core.crd import (
    ANNOTATION_LAST_ACTIVITY,
    ANNOTATION_POD_NAME,
    ANNOTATION_PVC_NAME,
    ChildNames,
    child_names,
    current_phase,
)
from trove_core.template import ANNOTATION_TEMPLATE_REVISION, template_revision
from trove_operator import builders, metrics, pool_reconciler, room
from trove_operator.kube import Kube, Manifest
from trove_operator.settings import load_settings
from trove_operator.spec import TroveNamespaceSpec

log = logging.getLogger(__name__)


class MalformedSpecError(kopf.PermanentError):
    """The spec does not parse; retrying cannot help until someone edits it."""


def blocked_ranges(configured_text: str) -> tuple[str, ...]:
    """CIDRs ``internet`` egress excludes: ``configured_text`` ($TROVE_OPERATOR_EGRESS_BLOCKED,
    comma-separated, set by the chart from the cluster's pod, service and node ranges) or the
    private ranges; link-local and loopback always. Parsed (and a malformed entry refused) at
    start-up, see lifecycle."""
    configured = [c.strip() for c in configured_text.split(",") if c.strip()]
    chosen = configured or list(builders.PRIVATE_RANGES)
    ranges = [str(ipaddress.ip_network(c, strict=False)) for c in (*builders.ALWAYS_BLOCKED, *chosen)]
    return tuple(dict.fromkeys(ranges))


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_spec(body: Manifest) -> TroveNamespaceSpec:
    try:
        return TroveNamespaceSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        meta = body.get("metadata") or {}
        raise MalformedSpecError(
            f"TroveNamespace {meta.get('namespace')}/{meta.get('name')} is malformed: {exc}"
        ) from exc


def fail_malformed(kube: Kube, body: Manifest, error: MalformedSpecError) -> None:
    """Users see a phase and an event, not just an operator log line."""
    meta = body["metadata"]
    children = child_names(meta["name"], meta.get("annotations"))
    status = builders.build_status(
        phase="Failed",
        reason="InvalidSpec",
        message=str(error)[:1000],
        children=children,
        pod_exists=False,
        generation=meta.get("generation"),
        previous=body.get("status"),
        now=now(),
    )
    kube.patch_status(meta["namespace"], meta["name"], status)
    kopf.warn(cast(Any, body), reason="InvalidSpec", message=str(error)[:1000])


def sync(kube: Kube, body: Manifest, blocked: tuple[str, ...], *, periodic: bool = False) -> str:
    """Bring the children in line with ``body``'s spec, write the status, return the phase.

    Failures get a Warning event when they begin; an unbound PVC only from the periodic pass,
    since every new claim is briefly unbound.
    """
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = parse_spec(body)
    annotations = meta.get("annotations") or {}
    children = child_names(name, annotations)
    owner = cast(Any, body)

    # Before any pod can carry this namespace's label, its policy exists.
    policy = builders.build_network_policy(name, children, spec, blocked)
    kopf.adopt(policy, owner=owner)
    live_policy, created = kube.ensure(namespace, policy)
    if not created and live_policy.get("spec") != policy["spec"]:
        kube.replace_network_policy(namespace, policy)

    settled = Settled(children)
    if ANNOTATION_PVC_NAME not in annotations:
        settled = settle_names(kube, body, spec, children)
    children, claimed = settled.names, settled.claimed

    pvc = builders.build_pvc(name, children, spec)
    if spec.deletion_policy == "Delete":
        # Owned: garbage collection removes it with the CR. Retain: no owner, it stays.
        kopf.adopt(pvc, owner=owner)
    # Read first (unless settling the names just did): after the first pass (or a claim) the
    # claim exists, and a create would 409.
    live_pvc = settled.pvc if settled.pvc_read else kube.get("PersistentVolumeClaim", namespace, children.pvc)
    live_pvc = live_pvc or kube.ensure(namespace, pvc)[0]
    wanted_owners = pvc["metadata"].get("ownerReferences") or []
    if [o.get("uid") for o in live_pvc["metadata"].get("ownerReferences") or []] != [
        o["uid"] for o in wanted_owners
    ]:
        kube.set_owners(namespace, "PersistentVolumeClaim", children.pvc, wanted_owners)

    pod = claimed.pod if claimed else kube.get("Pod", namespace, children.pod)
    terminating = pod is not None and bool(pod["metadata"].get("deletionTimestamp"))
    if spec.suspended:
        if pod is not None and not terminating:
            log.info("suspending %s/%s: deleting pod %s", namespace, name, children.pod)
            kube.delete_pod(namespace, children.pod)
            pod = kube.get("Pod", namespace, children.pod)
    else:
        desired = builders.build_pod(name, children, spec)
        kopf.adopt(desired, owner=owner)
        if pod is not None and not terminating and _stale(pod, desired):
            log.info("replacing pod %s/%s (ended or out of date)", namespace, children.pod)
            kube.delete_pod(namespace, children.pod)
            pod = kube.get("Pod", namespace, children.pod)
        elif pod is None:
            log.info("creating pod %s/%s", namespace, children.pod)
            pod, _ = kube.ensure(namespace, desired)

    return report(kube, body, spec, children, live_pvc, pod, periodic=periodic)


@dataclass(frozen=True)
class Settled:
    names: ChildNames
    claimed: pool_reconciler.Claimed | None = None
    pvc_read: bool = False  # settling read the live claim already: ``pvc`` is it (None: absent)
    pvc: Manifest | None = None


def settle_names(kube: Kube, body: Manifest, spec: TroveNamespaceSpec, children: ChildNames) -> Settled:
    """Fix the pod and PVC names once: a claimed warm pair's when the pool has one that fits,
    else the namespace's own (always those when its PVC already exists, e.g. made before
    names were recorded)."""
    meta = body["metadata"]
    if spec.suspended:
        settled = Settled(children)
    else:
        own_pvc = kube.get("PersistentVolumeClaim", meta["namespace"], children.pvc)
        if own_pvc is None:
            claimed = pool_reconciler.claim(kube, body, spec, children.network_policy)
            metrics.count_claim(hit=claimed is not None)
            if claimed is not None:
                return Settled(claimed.names, claimed, pvc_read=True, pvc=claimed.pvc)
        settled = Settled(children, pvc_read=True, pvc=own_pvc)
    kube.annotate_tns(
        meta["namespace"],
        meta["name"],
        {ANNOTATION_POD_NAME: children.pod, ANNOTATION_PVC_NAME: children.pvc},
    )
    return settled


def refresh(kube: Kube, body: Manifest, pod: Manifest | None, blocked: tuple[str, ...]) -> str:
    """A pod event: when the pod is current and alive, only its status needs copying (two calls
    instead of a full pass, which matters in a burst); anything else gets the full ``sync``."""
    spec = parse_spec(body)
    meta = body["metadata"]
    if pod is None or spec.suspended or pod["metadata"].get("deletionTimestamp"):
        return sync(kube, body, blocked)
    children = child_names(meta["name"], meta.get("annotations"))
    desired = builders.build_pod(meta["name"], children, spec)
    if _stale(pod, desired):
        return sync(kube, body, blocked)
    # A live pod means its claim is bound, so the PVC need not be read.
    return report(kube, body, spec, children, None, pod)


def report(
    kube: Kube,
    body: Manifest,
    spec: TroveNamespaceSpec,
    children: ChildNames,
    pvc: Manifest | None,
    pod: Manifest | None,
    *,
    periodic: bool = False,
) -> str:
    """Write the status the children show, warn when a failure begins, return the phase.

    An unbound PVC is warned about only from the periodic pass (and only when it was unbound
    before too), since every new claim is briefly unbound.
    """
    meta = body["metadata"]
    phase, reason, message = builders.assess(spec, pvc, pod)
    previous = body.get("status") or {}
    status = builders.build_status(
        phase=phase,
        reason=reason,
        message=message,
        children=children,
        pod_exists=pod is not None,
        generation=meta.get("generation"),
        previous=previous,
        now=now(),
        last_activity=(meta.get("annotations") or {}).get(ANNOTATION_LAST_ACTIVITY),
    )
    running = spec.suspended or (
        pod is not None
        and not pod["metadata"].get("deletionTimestamp")
        and not _stale(pod, builders.build_pod(meta["name"], children, spec))
    )
    status |= template_status(body, running=running)
    kube.patch_status(meta["namespace"], meta["name"], status)
    # Node full: free a pod now (once when it begins, then on each periodic pass it lasts).
    if reason == room.UNSCHEDULABLE and (periodic or _previous_reason(previous) != reason):
        min_idle = load_settings().operator_make_room_idle_s
        if min_idle > 0:
            room.make_room(kube, body, min_idle, dt.datetime.now(dt.UTC))
    elif reason != room.UNSCHEDULABLE:
        room.placed(body)
    began = phase == "Failed" and reason != _previous_reason(previous)
    stuck = periodic and reason == "PVCNotBound" and _previous_reason(previous) == "PVCNotBound"
    if began or stuck:
        kopf.warn(cast(Any, body), reason=reason, message=message)
    return phase


def template_status(body: Manifest, *, running: bool) -> Manifest:
    """Which sandbox template the namespace runs and which one it should (``kubectl get tns``).

    ``running``: the pod (or, suspended, the next one) is built from the spec as it is; else the
    pod is being replaced and still runs what the status said before. The desired revision is
    the one the API recorded (possibly newer than the spec while it waits for an idle moment),
    or the spec's for objects the API did not make.
    """
    spec_revision = template_revision(body.get("spec") or {})
    previous = (body.get("status") or {}).get("templateRevision")
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return {
        "templateRevision": spec_revision if running else previous,
        "desiredTemplateRevision": annotations.get(ANNOTATION_TEMPLATE_REVISION) or spec_revision,
    }


def show_desired(kube: Kube, body: Manifest) -> None:
    """The API recorded a template the namespace waits for: only the status's desired changes."""
    meta = body["metadata"]
    wanted = template_status(body, running=False)["desiredTemplateRevision"]
    kube.patch_status(meta["namespace"], meta["name"], {"desiredTemplateRevision": wanted})


def _stale(pod: Manifest, desired: Manifest) -> bool:
    if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
        return True
    have = (pod["metadata"].get("annotations") or {}).get(builders.ANNOTATION_SPEC_HASH)
    return bool(have != desired["metadata"]["annotations"][builders.ANNOTATION_SPEC_HASH])


def _previous_reason(status: Manifest) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return cast(str | None, condition.get("reason"))
    return None


def settled(body: Manifest) -> bool:
    """Whether the status reports a resting state (Ready, Suspended) for the current spec.

    Only such a namespace can wait for the slow re-sync: pod events keep it current. One in
    transit (Pending, Failed, or a newer spec not yet observed) has no event for everything it
    waits on (a PVC getting bound), so the idle check re-syncs it every time.
    """
    return current_phase(body) in ("Ready", "Suspended")


def idle_for(body: Manifest, at: dt.datetime) -> float | None:
    """Seconds since the API last recorded activity (or since creation, if it never did)."""
    meta = body.get("metadata") or {}
    stamp = (meta.get("annotations") or {}).get(ANNOTATION_LAST_ACTIVITY) or meta.get("creationTimestamp")
    if not stamp:
        return None
    try:
        seen = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return (at - seen).total_seconds()
