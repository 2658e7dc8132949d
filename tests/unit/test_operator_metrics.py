"""The operator's metrics: phase tracker, handler instrumentation, warm-pool series, the CLI flag."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import urllib.request

import kopf
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from trove_operator import cli, metrics
from trove_operator.metrics import OperatorMetrics, PhaseTracker, error_kind
from trove_operator.reconciler import MalformedSpecError


@pytest.fixture
def m() -> OperatorMetrics:
    return OperatorMetrics(CollectorRegistry())


def sample(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    value: float | None = m.registry.get_sample_value(name, labels)
    return value


# ── phases ───────────────────────────────────────────────────────────────────


def test_tracker_counts_the_last_phase_per_object_and_forgets() -> None:
    tracker = PhaseTracker()
    assert tracker.counts() == {"Pending": 0, "Ready": 0, "Suspended": 0, "Failed": 0}
    tracker.update("ns-a", "x", "Pending")
    tracker.update("ns-a", "x", "Ready")
    tracker.update("ns-b", "x", "Ready")  # same name, other Kubernetes namespace
    tracker.update("ns-a", "y", "Failed")
    assert tracker.counts() == {"Pending": 0, "Ready": 2, "Suspended": 0, "Failed": 1}
    tracker.forget("ns-a", "x")
    tracker.forget("ns-a", "never-seen")
    assert tracker.counts() == {"Pending": 0, "Ready": 1, "Suspended": 0, "Failed": 1}


def test_tracker_keeps_phases_it_does_not_know() -> None:
    tracker = PhaseTracker()
    tracker.update("ns", "x", "Terminating")
    assert tracker.counts()["Terminating"] == 1
    assert tracker.counts()["Ready"] == 0


def test_phase_gauge_always_exports_the_four_phases(m: OperatorMetrics) -> None:
    for phase in ("Pending", "Ready", "Suspended", "Failed"):
        assert sample(m, "trove_operator_namespaces", phase=phase) == 0
    m.phases.update("ns", "a", "Ready")
    m.phases.update("ns", "b", "Ready")
    m.phases.update("ns", "c", "Suspended")
    assert sample(m, "trove_operator_namespaces", phase="Ready") == 2
    assert sample(m, "trove_operator_namespaces", phase="Suspended") == 1
    m.phases.forget("ns", "a")
    m.phases.update("ns", "c", "Ready")
    assert sample(m, "trove_operator_namespaces", phase="Ready") == 2
    assert sample(m, "trove_operator_namespaces", phase="Suspended") == 0
    text = generate_latest(m.registry).decode()
    assert "# TYPE trove_operator_namespaces gauge" in text


async def test_observer_feeds_the_tracker_from_watch_events() -> None:
    from trove_operator import observe

    def ready() -> float:
        return metrics.METRICS.registry.get_sample_value("trove_operator_namespaces", {"phase": "Ready"}) or 0

    def pending() -> float:
        return (
            metrics.METRICS.registry.get_sample_value("trove_operator_namespaces", {"phase": "Pending"}) or 0
        )

    base_ready, base_pending = ready(), pending()
    obj = {"metadata": {"namespace": "unit-observe", "name": "t1"}}
    await observe.track_phase(event={"type": None, "object": obj})  # listing: no status yet
    assert (ready(), pending()) == (base_ready, base_pending + 1)
    obj = {**obj, "status": {"phase": "Ready"}}
    await observe.track_phase(event={"type": "MODIFIED", "object": obj})
    assert (ready(), pending()) == (base_ready + 1, base_pending)
    await observe.track_phase(event={"type": "DELETED", "object": obj})
    assert (ready(), pending()) == (base_ready, base_pending)


async def test_namespaces_awaiting_a_rollout_are_counted_until_they_run_the_wanted_template() -> None:
    from trove_operator import observe

    def outdated() -> float:
        return metrics.METRICS.registry.get_sample_value("trove_operator_namespaces_outdated", {}) or 0

    base = outdated()
    meta = {"namespace": "unit-rollout", "name": "t1"}

    async def seen(kind: str | None, **status: str) -> None:
        await observe.track_phase(event={"type": kind, "object": {"metadata": meta, "status": status}})

    await seen(None)  # no status yet: nothing to compare
    assert outdated() == base
    await seen("MODIFIED", phase="Ready", templateRevision="r1", desiredTemplateRevision="r1")
    assert outdated() == base
    await seen("MODIFIED", phase="Ready", templateRevision="r1", desiredTemplateRevision="r2")
    assert outdated() == base + 1
    await seen("MODIFIED", phase="Pending", templateRevision="r1", desiredTemplateRevision="r2")
    assert outdated() == base + 1  # its pod is being replaced
    await seen("MODIFIED", phase="Ready", templateRevision="r2", desiredTemplateRevision="r2")
    assert outdated() == base
    await seen("MODIFIED", phase="Ready", templateRevision="r2", desiredTemplateRevision="r3")
    await seen("DELETED", phase="Ready", templateRevision="r2", desiredTemplateRevision="r3")
    assert outdated() == base  # a deleted namespace waits for nothing


def test_outdated_gauge_is_exported(m: OperatorMetrics) -> None:
    assert sample(m, "trove_operator_namespaces_outdated") == 0
    m.phases.update("ns", "a", "Ready", outdated=True)
    m.phases.update("ns", "b", "Ready")
    assert sample(m, "trove_operator_namespaces_outdated") == 1
    m.phases.forget("ns", "a")
    assert sample(m, "trove_operator_namespaces_outdated") == 0
    assert "# TYPE trove_operator_namespaces_outdated gauge" in generate_latest(m.registry).decode()


# ── handler instrumentation ──────────────────────────────────────────────────


def errors(m: OperatorMetrics, handler: str, kind: str) -> float | None:
    return sample(m, "trove_operator_reconcile_errors_total", handler=handler, kind=kind)


def runs(m: OperatorMetrics, handler: str) -> float | None:
    return sample(m, "trove_operator_reconcile_duration_seconds_count", handler=handler)


def test_error_kinds() -> None:
    assert error_kind(kopf.TemporaryError("later", delay=1)) == "temporary"
    assert error_kind(kopf.PermanentError("never")) == "permanent"
    assert error_kind(MalformedSpecError("bad spec")) == "permanent"
    assert error_kind(KeyError("bug")) == "unexpected"


def test_instrumented_times_a_handler_and_keeps_its_identity(m: OperatorMetrics) -> None:
    def handler(body: dict[str, str], **_: object) -> str:
        """The docstring survives."""
        return body["name"]

    wrapped = m.instrumented("reconcile")(handler)
    assert runs(m, "reconcile") == 0
    assert wrapped({"name": "x"}, memo=None) == "x"
    assert wrapped({"name": "y"}) == "y"
    assert runs(m, "reconcile") == 2
    assert (sample(m, "trove_operator_reconcile_duration_seconds_sum", handler="reconcile") or 0) >= 0
    # kopf names handlers (and keys its progress annotations) after the wrapped function.
    assert wrapped.__name__ == "handler"
    assert wrapped.__doc__ == "The docstring survives."
    assert kopf._core.intents.registries.get_callable_id(wrapped).endswith("handler")
    # Every kind is exported from the start, so rate() works before the first failure.
    for kind in ("temporary", "permanent", "unexpected"):
        assert errors(m, "reconcile", kind) == 0


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (kopf.TemporaryError("API busy", delay=5), "temporary"),
        (kopf.PermanentError("gone"), "permanent"),
        (MalformedSpecError("bad"), "permanent"),
        (RuntimeError("bug"), "unexpected"),
    ],
)
def test_instrumented_counts_errors_by_kind_and_reraises(
    m: OperatorMetrics, exc: Exception, kind: str
) -> None:
    @m.instrumented("stop_idle")
    def handler() -> None:
        raise exc

    with pytest.raises(type(exc)) as raised:
        handler()
    assert raised.value is exc
    assert errors(m, "stop_idle", kind) == 1
    others = {"temporary", "permanent", "unexpected"} - {kind}
    assert [errors(m, "stop_idle", k) for k in sorted(others)] == [0, 0]
    assert runs(m, "stop_idle") == 1  # failed runs are timed too


def test_instrumented_keeps_handlers_apart(m: OperatorMetrics) -> None:
    ok = m.instrumented("reconcile")(lambda: None)
    bad = m.instrumented("follow_pod")(lambda: 1 / 0)
    ok()
    with pytest.raises(ZeroDivisionError):
        bad()
    assert (runs(m, "reconcile"), runs(m, "follow_pod")) == (1, 1)
    assert errors(m, "reconcile", "unexpected") == 0
    assert errors(m, "follow_pod", "unexpected") == 1


async def test_instrumented_async_handlers_stay_async(m: OperatorMetrics) -> None:
    @m.instrumented("observe")
    async def handler(fail: bool) -> str:
        await asyncio.sleep(0)
        if fail:
            raise kopf.TemporaryError("again", delay=1)
        return "done"

    # kopf picks sync-in-a-thread or await by looking through functools.wraps.
    assert kopf._core.actions.invocation.is_async_fn(handler)
    assert await handler(False) == "done"
    with pytest.raises(kopf.TemporaryError):
        await handler(True)
    assert runs(m, "observe") == 2
    assert errors(m, "observe", "temporary") == 1


def test_real_handlers_are_instrumented() -> None:
    from trove_operator import handlers

    for name in ("reconcile", "follow_pod", "stop_idle"):
        fn = getattr(handlers, name)
        assert hasattr(fn, "__wrapped__"), name
        assert (
            metrics.METRICS.registry.get_sample_value(
                "trove_operator_reconcile_errors_total", {"handler": name, "kind": "unexpected"}
            )
            is not None
        ), name


# ── warm pools ───────────────────────────────────────────────────────────────


def test_warm_pool_gauges_and_claims(m: OperatorMetrics) -> None:
    assert sample(m, "trove_operator_warm_pool_claims_total", result="hit") == 0
    assert sample(m, "trove_operator_warm_pool_claims_total", result="miss") == 0
    m.set_warm_pool("trove", "default", warm=3, ready=2)
    m.set_warm_pool("trove", "default", warm=4, ready=1)
    assert sample(m, "trove_operator_warm_pool_pods", namespace="trove", pool="default", state="warm") == 4
    assert sample(m, "trove_operator_warm_pool_pods", namespace="trove", pool="default", state="ready") == 1
    m.count_claim(True)
    m.count_claim(True)
    m.count_claim(False)
    assert sample(m, "trove_operator_warm_pool_claims_total", result="hit") == 2
    assert sample(m, "trove_operator_warm_pool_claims_total", result="miss") == 1
    m.forget_warm_pool("trove", "default")
    m.forget_warm_pool("trove", "never-existed")
    assert sample(m, "trove_operator_warm_pool_pods", namespace="trove", pool="default", state="warm") is None


def test_module_functions_feed_the_default_registry() -> None:
    registry = metrics.METRICS.registry

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    before = value("trove_operator_warm_pool_claims_total", result="miss")
    metrics.count_claim(False)
    assert value("trove_operator_warm_pool_claims_total", result="miss") == before + 1
    metrics.set_warm_pool("unit-test", "p", 5, 3)
    assert value("trove_operator_warm_pool_pods", namespace="unit-test", pool="p", state="ready") == 3
    metrics.forget_warm_pool("unit-test", "p")
    ready = value("trove_operator_namespaces", phase="Ready")
    metrics.observe_phase("unit-test", "tns", "Ready")
    assert value("trove_operator_namespaces", phase="Ready") == ready + 1
    metrics.forget("unit-test", "tns")
    assert value("trove_operator_namespaces", phase="Ready") == ready


# ── the --metrics-port flag ──────────────────────────────────────────────────


def test_metrics_port_flag_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TROVE_OPERATOR_METRICS_PORT", raising=False)
    assert cli.build_parser().parse_args([]).metrics_port == 9090
    assert cli.build_parser().parse_args(["--metrics-port", "0"]).metrics_port == 0
    monkeypatch.setenv("TROVE_OPERATOR_METRICS_PORT", "9191")
    assert cli.build_parser().parse_args([]).metrics_port == 9191
    assert cli.build_parser().parse_args(["--metrics-port", "9292"]).metrics_port == 9292


@pytest.mark.parametrize("bad", ["-1", "65536", "nine", ""])
def test_metrics_port_flag_rejects_non_ports(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--metrics-port", bad])
    assert "is not a port number" in capsys.readouterr().err


def test_serve_exposes_the_registry_over_http() -> None:
    # A child process: the HTTP server thread cannot be stopped, and must not outlive this test.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (
        "import sys, time\n"
        "from trove_operator import metrics\n"
        f"metrics.serve({port}, '127.0.0.1')\n"
        "metrics.observe_phase('ns', 'a', 'Ready')\n"
        "print('up', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "up"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert 'trove_operator_namespaces{phase="Ready"} 1.0' in body
        assert 'trove_operator_namespaces{phase="Failed"} 0.0' in body
        assert "process_resident_memory_bytes" in body  # the default registry's process metrics
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
        if child.stdin is not None:
            child.stdin.close()
