"""TroveNamespace objects from the API's side: create on first use, wake when suspended, wait for Ready."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from trove_api.runtimes.kubernetes.kubeapi import KubeApi, Manifest
from trove_api.runtimes.kubernetes.rollout import Rollout
from trove_core.crd import (
    ANNOTATION_LAST_ACTIVITY,
    GROUP,
    KIND,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    VERSION,
    current_phase,
)
from trove_core.errors import SandboxNotReadyError
from trove_core.runtime import NamespaceRef
from trove_core.settings import Settings
from trove_core.template import ANNOTATION_TEMPLATE_AT, ANNOTATION_TEMPLATE_REVISION, template_revision


def build_template(settings: Settings) -> Manifest:
    """The sandbox template of the namespaces the API makes (trove_core.template's fields)."""
    return {
        "image": settings.k8s_sandbox_image,
        "imagePullPolicy": settings.k8s_image_pull_policy,
        "resources": {
            "requests": {
                "cpu": settings.k8s_cpu_request,
                "memory": settings.k8s_memory_request,
                "ephemeralStorage": settings.k8s_ephemeral_storage_request,
            },
            "limits": {
                "cpu": settings.k8s_cpu_limit,
                "memory": settings.k8s_memory_limit,
                "ephemeralStorage": settings.k8s_ephemeral_storage_limit,
            },
        },
        "maxProcesses": settings.k8s_max_processes,
        # TROVE_SANDBOX_NETWORK=off turns the network off on both backends.
        "egress": "none" if settings.sandbox_network == "off" else settings.k8s_sandbox_egress,
        "idleSuspendSeconds": settings.k8s_idle_suspend_s,
    }


def build_tns(settings: Settings, ns: NamespaceRef, *, template_at: str | None = None) -> Manifest:
    """The object the API creates for a namespace; the operator fills in the rest.

    ``template_at``: when this API replica started (see rollout.newer_elsewhere).
    """
    template = build_template(settings)
    annotations = {ANNOTATION_TEMPLATE_REVISION: template_revision(template)}
    if template_at:
        annotations[ANNOTATION_TEMPLATE_AT] = template_at
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": ns.object_name,
            "labels": {LABEL_MANAGED_BY: "trove-api", LABEL_COMPONENT: "namespace"},
            "annotations": annotations,
        },
        "spec": {
            "workspaceId": ns.workspace_id,
            "namespace": ns.name,
            "storage": {"size": settings.k8s_storage_size}
            | ({"storageClassName": settings.k8s_storage_class} if settings.k8s_storage_class else {}),
            **template,
            "suspended": False,
        },
    }


def activity_stamp(at: float) -> str:
    """The last-activity annotation's value for a ``time.time()`` instant."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_pod(obj: Manifest) -> str | None:
    """The pod name if the object reports Ready for its current generation."""
    pod = (obj.get("status") or {}).get("pod")
    if current_phase(obj) != "Ready" or not pod:
        return None
    return str(pod)


def not_ready_error(obj: Manifest, waited_s: float) -> SandboxNotReadyError:
    """503 + Retry-After for a sandbox that did not get ready in time, saying why.

    A pod the scheduler cannot place (the cluster is full) gets a short Retry-After: the operator
    is suspending the least recently used idle namespace to make room for it.
    """
    status = obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    reason = status.get("message") or "the operator has not reported on it yet"
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    if phase == "Pending" and ready and ready[0].get("reason") == "Unschedulable":
        return SandboxNotReadyError(
            f"No capacity for the namespace's sandbox yet ({reason}); the operator is freeing an "
            "idle sandbox for it: retry shortly",
            retry_after=5,
        )
    return SandboxNotReadyError(
        f"The namespace's sandbox is not ready after {waited_s:g}s (phase {phase}: {reason}); retry shortly",
        retry_after=5 if phase != "Failed" else 30,
    )


class NamespaceControl:
    def __init__(self, api: KubeApi, settings: Settings, rollout: Rollout | None = None) -> None:
        self.api = api
        self.settings = settings
        self.rollout = rollout

    async def ensure(self, ns: NamespaceRef) -> Manifest:
        name = ns.object_name
        existing = await self.api.get_tns(name)
        if existing is not None:
            if self.rollout is not None:
                self.rollout.notice(existing)  # an old template: rolled once the call is over
            return existing
        template_at = self.rollout.template_at if self.rollout is not None else None
        return await self.api.create_tns(build_tns(self.settings, ns, template_at=template_at))

    async def wait_ready(self, ns: NamespaceRef) -> str:
        """Create, wake and watch until the pod is Ready; 503 + Retry-After past the deadline."""
        deadline = time.monotonic() + self.settings.k8s_ready_timeout_s
        name = ns.object_name
        obj = await self.ensure(ns)
        if (obj.get("spec") or {}).get("suspended"):
            # Waking is activity: with only the stamp of the last flush (older than the idle
            # limit), the operator would suspend the namespace again before the next flush.
            wake: Manifest = {
                "metadata": {"annotations": {ANNOTATION_LAST_ACTIVITY: activity_stamp(time.time())}},
                "spec": {"suspended": False},
            }
            if self.rollout is not None:
                # No pod runs: the ideal moment to take a changed sandbox template along.
                rolled = self.rollout.on_wake(obj)
                if rolled:
                    wake["metadata"]["annotations"] |= rolled["metadata"]["annotations"]
                    wake["spec"] |= rolled["spec"]
            obj = await self.api.patch_tns(name, wake) or obj
        pod = ready_pod(obj)
        while pod is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._not_ready(obj)
            version = str((obj.get("metadata") or {}).get("resourceVersion", "0"))
            try:
                async with asyncio.timeout(remaining):
                    async for event in self.api.watch_tns(name, version, remaining):
                        if event.get("type") == "DELETED":
                            obj = await self.ensure(ns)
                            break
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            obj = event["object"]
                            if (obj.get("spec") or {}).get("suspended"):
                                # Suspended after this call woke it (an E2B pause): it would
                                # wait out its deadline for a pod that is not coming.
                                raise SandboxNotReadyError(
                                    "The namespace's sandbox was suspended while this call waited "
                                    "for it; retry to wake it",
                                    retry_after=1,
                                )
                            pod = ready_pod(obj)
                            if pod is not None:
                                break
                    else:
                        # The server ended the watch early (or 410 Gone): read afresh and re-watch.
                        obj = await self.api.get_tns(name) or await self.ensure(ns)
                        pod = ready_pod(obj)
            except TimeoutError:
                raise self._not_ready(obj) from None
        return pod

    def _not_ready(self, obj: Manifest) -> SandboxNotReadyError:
        return not_ready_error(obj, self.settings.k8s_ready_timeout_s)

    async def touch(self, name: str, stamp: str) -> None:
        await self.api.patch_tns(name, {"metadata": {"annotations": {ANNOTATION_LAST_ACTIVITY: stamp}}})
