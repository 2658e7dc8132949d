"""The operator subprocess's /metrics on a real cluster: phases follow TroveNamespaces, handlers are timed."""

from __future__ import annotations

import urllib.request

from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_operator import create_tns, phase_is
from tests.support.cluster import Cluster, wait_for
from trove_core.crd import GROUP, PLURAL, VERSION

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(k8s: Cluster) -> Samples:
    assert k8s.metrics_url is not None
    with urllib.request.urlopen(k8s.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def tracked(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "trove_operator_namespaces")


def live_count(k8s: Cluster) -> int:
    listed = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL)
    return len(listed["items"])


def scrape_when_up(k8s: Cluster) -> Samples:
    def attempt() -> Samples | None:
        try:
            return scrape(k8s)
        except OSError:
            return None  # the subprocess is still importing

    found: Samples = wait_for(attempt, timeout=30, what="the operator's metrics endpoint")
    return found


def test_metrics_follow_a_trove_namespace(k8s: Cluster) -> None:
    first = scrape_when_up(k8s)
    for phase in ("Pending", "Ready", "Suspended", "Failed"):
        assert value(first, "trove_operator_namespaces", phase=phase) is not None, phase
    assert value(first, "trove_operator_reconcile_errors_total", handler="reconcile", kind="unexpected") == 0

    name = create_tns(k8s)
    wait_for(lambda: phase_is(k8s, name, "Ready"), what="phase Ready")

    def ready_seen() -> Samples | None:
        samples = scrape(k8s)
        ready = value(samples, "trove_operator_namespaces", phase="Ready") or 0
        return samples if ready >= 1 else None

    samples = wait_for(ready_seen, timeout=30, what='trove_operator_namespaces{phase="Ready"} >= 1')
    runs = value(samples, "trove_operator_reconcile_duration_seconds_count", handler="reconcile")
    assert runs is not None
    assert runs >= 1
    assert value(samples, "trove_operator_reconcile_duration_seconds_count", handler="follow_pod")

    # Every object the operator watches is counted once, and a deleted one stops being counted.
    wait_for(lambda: tracked(scrape(k8s)) == live_count(k8s), timeout=30, what="tracked == live objects")
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name)

    def gone() -> bool:
        try:
            k8s.custom.get_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, what="the TroveNamespace to be deleted")
    wait_for(lambda: tracked(scrape(k8s)) == live_count(k8s), timeout=30, what="tracked == live after delete")
