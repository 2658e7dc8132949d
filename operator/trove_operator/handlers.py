"""Thin kopf handlers: reconcile TroveNamespaces, follow their pods, suspend idle ones."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import kopf

from trove_core.crd import GROUP, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_NAMESPACE, PLURAL, VERSION
from trove_core.template import ANNOTATION_TEMPLATE_REVISION
from trove_operator import ghosts, metrics, reconciler
from trove_operator.kube import Kube
from trove_operator.settings import load_settings

log = logging.getLogger(__name__)


def _kube(memo: Any) -> Kube:
    kube: Kube = memo.kube
    return kube


def _blocked(memo: Any) -> tuple[str, ...]:
    blocked: tuple[str, ...] = memo.blocked
    return blocked


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@metrics.instrumented("reconcile")
def reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    kube = _kube(memo)
    manifest = dict(body)
    try:
        phase = reconciler.sync(kube, manifest, _blocked(memo))
    except reconciler.MalformedSpecError as exc:
        reconciler.fail_malformed(kube, manifest, exc)
        raise
    log.info("reconciled %s/%s: %s", body.meta.namespace, body.meta.name, phase)


@kopf.on.update(GROUP, VERSION, PLURAL, field=("metadata", "annotations", ANNOTATION_TEMPLATE_REVISION))
@metrics.instrumented("show_desired")
def show_desired(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The API recorded the template a namespace waits for (rollout): show it in the status."""
    reconciler.show_desired(_kube(memo), dict(body))


@kopf.on.event("", "v1", "pods", labels={LABEL_COMPONENT: "sandbox", LABEL_MANAGED_BY: "trove-operator"})
@metrics.instrumented("follow_pod")
def follow_pod(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A sandbox pod changed, ended or vanished: re-sync its TroveNamespace (recreating the pod)."""
    pod = event["object"]
    meta = pod.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(LABEL_NAMESPACE)
    if not owner:
        return
    kube = _kube(memo)
    body = kube.get_tns(meta["namespace"], owner)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    alive = None if event.get("type") == "DELETED" else dict(pod)
    try:
        reconciler.refresh(kube, body, alive, _blocked(memo))
    except reconciler.MalformedSpecError:
        return  # the CR handler already reported it
    except kopf.TemporaryError as exc:
        # Event handlers are not retried; the timer below is the safety net.
        log.warning("re-sync of %s/%s after a pod event failed: %s", meta["namespace"], owner, exc)


# kopf fixes a timer's interval when the handler is registered, i.e. on import.
# How often each namespace is checked for idleness (and, while in transit, re-synced); tests
# set a few seconds.
IDLE_CHECK_S = load_settings().operator_idle_check_s
# How often a settled (Ready or Suspended) namespace is re-synced anyway. Pod events keep those
# current; this only catches drift no event reports, such as a deleted NetworkPolicy. Each sync
# is five API calls: at the idle check's pace, a few hundred namespaces kept the operator's
# workers so busy that new pods were reported Ready many seconds late.
RESYNC_S = load_settings().operator_resync_s


@kopf.timer(
    GROUP, VERSION, PLURAL, interval=IDLE_CHECK_S, initial_delay=IDLE_CHECK_S, idle=10, when=ghosts.alive
)
@metrics.instrumented("stop_idle")
def stop_idle(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Suspend namespaces idle past ``idleSuspendSeconds``; re-sync those still in transit."""
    kube = _kube(memo)
    manifest = dict(body)
    try:
        spec = reconciler.parse_spec(manifest)
        limit = spec.idle_suspend_seconds
        idle = reconciler.idle_for(manifest, dt.datetime.now(dt.UTC))
        if limit and not spec.suspended and idle is not None and idle > limit:
            log.info("suspending %s/%s after %.0f s idle", body.meta.namespace, body.meta.name, idle)
            kube.patch_spec(body.meta.namespace or "", body.meta.name or "", {"suspended": True})
            return
        if not reconciler.settled(manifest):
            reconciler.sync(kube, manifest, _blocked(memo), periodic=True)
    except (reconciler.MalformedSpecError, kopf.TemporaryError) as exc:
        # The next tick is the retry.
        log.warning("timer for %s/%s: %s", body.meta.namespace, body.meta.name, exc)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_S, initial_delay=RESYNC_S, idle=10, when=ghosts.alive)
@metrics.instrumented("resync")
def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Re-sync every namespace now and then: the safety net behind the events."""
    try:
        reconciler.sync(_kube(memo), dict(body), _blocked(memo), periodic=True)
    except (reconciler.MalformedSpecError, kopf.TemporaryError) as exc:
        log.warning("re-sync of %s/%s: %s", body.meta.namespace, body.meta.name, exc)
