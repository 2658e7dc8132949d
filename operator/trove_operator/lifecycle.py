"""Operator start-up, shutdown and health: settings and client on ``memo``, kopf tuning, liveness probe."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from trove_core.crd import GROUP
from trove_operator.kube import Kube, load_config
from trove_operator.reconciler import blocked_ranges
from trove_operator.settings import load_settings

log = logging.getLogger(__name__)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.settings = load_settings()
    # Parsed here so a malformed entry stops the start instead of failing every reconcile.
    memo.blocked = blocked_ranges(memo.settings.operator_egress_blocked)
    load_config()
    memo.kube = Kube()
    tune(settings)
    log.info("trove-operator configured; internet egress excludes %s", ", ".join(memo.blocked))


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    kube: Kube | None = getattr(memo, "kube", None)
    if kube is not None:
        kube.api.close()  # type: ignore[no-untyped-call]


def tune(settings: kopf.OperatorSettings) -> None:
    # Progress and the last-handled spec live in our own annotations: the CRD's structural
    # schema would prune kopf's default ``status.kopf`` field.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/operator"
    # Watches that never time out go silently stale behind some load balancers
    # (kopf issues #585, #847): reconnect every few minutes.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Handlers are sync and run in a thread pool: bound it, so a burst of 100 new namespaces
    # does not open 100 API connections at once. kopf's per-object workers are cheap coroutines
    # that linger `idle_timeout` after each event: a low cap made pod events wait behind idle
    # workers in a burst (pods Ready after 5-30 s, their CRs only at the 30 s timer), so none.
    settings.execution.max_workers = 16
    settings.queueing.worker_limit = None
    settings.posting.level = logging.WARNING
    # Two replicas: peering makes the lower-priority one pause while the other is alive.
    settings.peering.priority = 100
    # A deleted object keeps kopf's finalizer until its timers exit; a sync timer caught mid-run
    # (in its thread) is checked again only after this, so deletions hung for kopf's 60 s.
    settings.background.cancellation_polling = 1


@kopf.on.probe(id="api")
def api_reachable(memo: kopf.Memo, **_: Any) -> str:
    kube: Kube = memo.kube
    return kube.server_version()
