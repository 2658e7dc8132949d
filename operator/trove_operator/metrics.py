"""Prometheus metrics of the operator: namespaces by phase, handler errors and durations, warm pools."""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar, cast

import kopf
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

PHASES: Final = ("Pending", "Ready", "Suspended", "Failed")
ERROR_KINDS: Final = ("temporary", "permanent", "unexpected")

F = TypeVar("F", bound=Callable[..., Any])


class PhaseTracker:
    """The last phase seen of each TroveNamespace, keyed by (Kubernetes namespace, name), and
    whether its pod runs an older sandbox template than the one wanted (a rollout waiting)."""

    def __init__(self) -> None:
        # Event handlers and the scrape thread touch it concurrently.
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], str] = {}
        self._outdated: set[tuple[str, str]] = set()

    def update(self, namespace: str, name: str, phase: str, *, outdated: bool = False) -> None:
        with self._lock:
            self._phases[(namespace, name)] = phase
            if outdated:
                self._outdated.add((namespace, name))
            else:
                self._outdated.discard((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._phases.pop((namespace, name), None)
            self._outdated.discard((namespace, name))

    def counts(self) -> dict[str, int]:
        """Objects per phase: the four known phases always (0 when none), then any other seen."""
        counts = dict.fromkeys(PHASES, 0)
        with self._lock:
            for phase in self._phases.values():
                counts[phase] = counts.get(phase, 0) + 1
        return counts

    def outdated(self) -> int:
        with self._lock:
            return len(self._outdated)


class _PhaseCollector(Collector):
    """Counts computed at scrape time, so a forgotten object can never leave a stale series."""

    def __init__(self, tracker: PhaseTracker) -> None:
        self._tracker = tracker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "trove_operator_namespaces", "TroveNamespaces by status phase.", labels=["phase"]
        )
        for phase, count in self._tracker.counts().items():
            family.add_metric([phase], count)
        yield family
        yield GaugeMetricFamily(
            "trove_operator_namespaces_outdated",
            "TroveNamespaces whose pod runs an older sandbox template than the one wanted "
            "(a rollout waiting for their idle moment).",
            value=self._tracker.outdated(),
        )


def error_kind(exc: BaseException) -> str:
    """How kopf treats a handler's exception: retried later, given up on, or a bug."""
    if isinstance(exc, kopf.TemporaryError):
        return "temporary"
    if isinstance(exc, kopf.PermanentError):
        return "permanent"
    return "unexpected"


class OperatorMetrics:
    """The operator's collectors; one instance on the default registry, fresh ones in tests."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.phases = PhaseTracker()
        registry.register(_PhaseCollector(self.phases))
        self.reconcile_errors = Counter(
            "trove_operator_reconcile_errors",
            "Exceptions raised by kopf handlers, by handler and kind (temporary, permanent, unexpected).",
            ["handler", "kind"],
            registry=registry,
        )
        self.reconcile_duration = Histogram(
            "trove_operator_reconcile_duration_seconds",
            "Wall-clock time of kopf handlers, failed runs included.",
            ["handler"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.warm_pool_pods = Gauge(
            "trove_operator_warm_pool_pods",
            "Pods of a warm pool, by state (warm: created, ready: claimable now).",
            ["namespace", "pool", "state"],
            registry=registry,
        )
        self.warm_pool_claims = Counter(
            "trove_operator_warm_pool_claims",
            "Warm-pool claims, by result (hit: a warm pod was taken, miss: a cold start).",
            ["result"],
            registry=registry,
        )
        for result in ("hit", "miss"):
            self.warm_pool_claims.labels(result=result)

    def instrumented(self, handler: str) -> Callable[[F], F]:
        """Time a handler and count what it raises by kind; the exception still reaches kopf."""
        for kind in ERROR_KINDS:
            self.reconcile_errors.labels(handler=handler, kind=kind)
        duration = self.reconcile_duration.labels(handler=handler)

        def count(exc: Exception) -> None:
            self.reconcile_errors.labels(handler=handler, kind=error_kind(exc)).inc()

        def decorate(fn: F) -> F:
            # functools.wraps keeps kopf's handler id (and its sync/async dispatch) that of ``fn``.
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def run_async(*args: Any, **kwargs: Any) -> Any:
                    started = time.perf_counter()
                    try:
                        return await fn(*args, **kwargs)
                    except Exception as exc:
                        count(exc)
                        raise
                    finally:
                        duration.observe(time.perf_counter() - started)

                return cast(F, run_async)

            @functools.wraps(fn)
            def run(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    count(exc)
                    raise
                finally:
                    duration.observe(time.perf_counter() - started)

            return cast(F, run)

        return decorate

    def set_warm_pool(self, namespace: str, pool: str, warm: int, ready: int) -> None:
        self.warm_pool_pods.labels(namespace=namespace, pool=pool, state="warm").set(warm)
        self.warm_pool_pods.labels(namespace=namespace, pool=pool, state="ready").set(ready)

    def forget_warm_pool(self, namespace: str, pool: str) -> None:
        for state in ("warm", "ready"):
            self.warm_pool_pods.remove(namespace, pool, state)

    def count_claim(self, hit: bool) -> None:
        self.warm_pool_claims.labels(result="hit" if hit else "miss").inc()


METRICS: Final = OperatorMetrics()


def instrumented(handler: str) -> Callable[[F], F]:
    return METRICS.instrumented(handler)


def observe_phase(namespace: str, name: str, phase: str, *, outdated: bool = False) -> None:
    METRICS.phases.update(namespace, name, phase, outdated=outdated)


def forget(namespace: str, name: str) -> None:
    METRICS.phases.forget(namespace, name)


def set_warm_pool(namespace: str, pool: str, warm: int, ready: int) -> None:
    METRICS.set_warm_pool(namespace, pool, warm, ready)


def forget_warm_pool(namespace: str, pool: str) -> None:
    METRICS.forget_warm_pool(namespace, pool)


def count_claim(hit: bool) -> None:
    METRICS.count_claim(hit)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve the default registry (ours plus process metrics) on ``addr:port`` from a daemon thread."""
    start_http_server(port, addr=addr, registry=METRICS.registry)
