"""The operator's settings: kopf's (tune() is the pure part of the startup handler) and its own
``OperatorSettings`` (one model, documented by the README's generated table)."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest
from kubernetes import client

from trove_operator.kube import Kube
from trove_operator.lifecycle import close, tune
from trove_operator.reconciler import blocked_ranges
from trove_operator.settings import OperatorSettings
from trove_operator.settings_doc import BEGIN, END, operator_settings_table


def test_deletions_do_not_wait_a_minute_for_a_running_timer() -> None:
    settings = kopf.OperatorSettings()
    assert settings.background.cancellation_polling == 60  # kopf's default: what this guards against
    tune(settings)
    assert settings.background.cancellation_polling <= 1


def test_kopf_state_lives_in_our_annotations_and_finalizer() -> None:
    settings = kopf.OperatorSettings()
    tune(settings)
    assert settings.persistence.finalizer == "trove.dev/operator"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)


# ── the one settings model ───────────────────────────────────────────────────

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "trove_operator"
README = OPERATOR.parents[1] / "README.md"


def test_readme_operator_settings_table_matches_code() -> None:
    text = README.read_text()
    between = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert between == operator_settings_table(), (
        "run: python -m trove_operator.settings_doc and paste into README"
    )


def test_the_operator_reads_its_environment_only_through_its_settings() -> None:
    readers = [
        path.name
        for path in OPERATOR.glob("*.py")
        if "os.environ" in path.read_text() or "getenv" in path.read_text()
    ]
    assert readers == []


def test_variable_names_and_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    names = {
        "TROVE_K8S_NAMESPACE": ("k8s_namespace", "", "sandboxes"),
        "TROVE_OPERATOR_PEERING": ("operator_peering", "trove-operator", "other"),
        "TROVE_OPERATOR_METRICS_PORT": ("operator_metrics_port", "9090", "9191"),
        "TROVE_OPERATOR_METRICS_HOST": ("operator_metrics_host", "0.0.0.0", "127.0.0.1"),
        "TROVE_OPERATOR_IDLE_CHECK_S": ("operator_idle_check_s", 30.0, 2.0),
        "TROVE_OPERATOR_RESYNC_S": ("operator_resync_s", 300.0, 20.0),
        "TROVE_OPERATOR_POOL_CHECK_S": ("operator_pool_check_s", 5.0, 1.0),
        "TROVE_OPERATOR_EGRESS_BLOCKED": ("operator_egress_blocked", "", "10.0.0.0/8"),
    }
    for env in names:
        monkeypatch.delenv(env, raising=False)
    defaults = OperatorSettings()
    for env, (field, default, value) in names.items():
        assert getattr(defaults, field) == default, env
        monkeypatch.setenv(env, str(value))
    configured = OperatorSettings()
    for env, (field, _, value) in names.items():
        assert getattr(configured, field) == value, env


def test_a_malformed_blocked_range_is_refused() -> None:
    with pytest.raises(ValueError):
        blocked_ranges("10.0.0.0/8, not-a-cidr")
    assert "10.0.0.0/8" in blocked_ranges(" 10.0.0.0/8 ,")
    assert "169.254.0.0/16" in blocked_ranges("")  # link-local, whatever is configured


def test_cleanup_closes_the_kubernetes_client() -> None:
    kube = Kube(client.ApiClient(client.Configuration()))
    kube.api.pool  # noqa: B018 - starts the client's thread pool, which close() must end
    close(memo=kopf.Memo(kube=kube))
    assert kube.api._pool is None
    close(memo=kopf.Memo())  # start-up failed before a client existed: nothing to close
