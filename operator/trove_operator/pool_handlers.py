"""Thin kopf handlers for TroveWarmPools: keep each pool at its size, report its counts."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from trove_core.crd import GROUP, POOL_PLURAL, VERSION
from trove_operator import ghosts, metrics, pool_reconciler
from trove_operator.kube import Kube
from trove_operator.settings import load_settings

log = logging.getLogger(__name__)

# How often a pool is topped up after claims (and its status refreshed); fixed on import, when
# kopf registers the timer.
POOL_CHECK_S = load_settings().operator_pool_check_s


def _replenish(body: kopf.Body, memo: kopf.Memo) -> None:
    kube: Kube = memo.kube
    todo = pool_reconciler.replenish(kube, dict(body))
    metrics.set_warm_pool(body.meta.namespace or "", body.meta.name or "", todo.warm, todo.ready)
    if todo.create or todo.delete:
        log.info(
            "warm pool %s/%s: %d waiting (%d ready), %d created, %d removed",
            body.meta.namespace,
            body.meta.name,
            todo.warm,
            todo.ready,
            todo.create,
            len(todo.delete),
        )


@kopf.on.resume(GROUP, VERSION, POOL_PLURAL)
@kopf.on.create(GROUP, VERSION, POOL_PLURAL)
@kopf.on.update(GROUP, VERSION, POOL_PLURAL, field="spec")
@metrics.instrumented("pool")
def reconcile_pool(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _replenish(body, memo)


@kopf.timer(GROUP, VERSION, POOL_PLURAL, interval=POOL_CHECK_S, initial_delay=POOL_CHECK_S, when=ghosts.alive)
@metrics.instrumented("pool_timer")
def keep_pool_warm(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        _replenish(body, memo)
    except (pool_reconciler.MalformedPoolError, kopf.TemporaryError) as exc:
        log.warning("warm pool %s/%s: %s", body.meta.namespace, body.meta.name, exc)  # next tick retries


@kopf.on.delete(GROUP, VERSION, POOL_PLURAL, optional=True)
def forget_pool(body: kopf.Body, **_: Any) -> None:
    # Members are owned by the pool: garbage collection removes them.
    metrics.forget_warm_pool(body.meta.namespace or "", body.meta.name or "")
