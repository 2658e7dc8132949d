"""Feed the phase and rollout metrics from every TroveNamespace watch event (a read-only observer)."""

from __future__ import annotations

from typing import Any

import kopf

from trove_core.crd import GROUP, PLURAL, VERSION
from trove_operator import metrics


@kopf.on.event(GROUP, VERSION, PLURAL)
async def track_phase(event: kopf.RawEvent, **_: Any) -> None:
    # Async: a dict update needs no slot in the sync handlers' thread pool.
    body = event["object"]
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    if event.get("type") == "DELETED":
        metrics.forget(namespace, name)
        return
    # A new object has no status until its first reconcile.
    status = body.get("status") or {}
    running, wanted = status.get("templateRevision"), status.get("desiredTemplateRevision")
    outdated = bool(running and wanted and running != wanted)
    metrics.observe_phase(namespace, name, status.get("phase") or "Pending", outdated=outdated)
