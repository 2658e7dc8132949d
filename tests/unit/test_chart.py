"""The Helm chart, rendered by the real `helm template` (and `helm lint`) for each value set.

Helm is not on a fresh machine: these tests skip with the reason, and fail under
``TROVE_E2E_REQUIRED=1`` (CI installs helm with ../shared/k8s/tools.sh first). Value branches and
NOTES.txt: test_chart_values.py. Install, upgrade, uninstall on a real cluster: tests/e2e/test_helm.py.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm import (
    CHART,
    CI_VALUES,
    ROOT,
    Doc,
    env_of,
    find,
    helm_run,
    kinds,
    render,
    render_error,
    rules,
)

# ── the CRD copy, lint, every ci/ value set ───────────────────────────────────


def test_crd_copies_are_byte_identical() -> None:
    # kopf-peering.yaml stays out of the chart's crds/: the chart templates it (peering is optional).
    canonical = [
        ROOT / "crds" / name for name in ("trovenamespaces.trove.dev.yaml", "trovewarmpools.trove.dev.yaml")
    ]
    for path in canonical:
        assert (CHART / "crds" / path.name).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [p.name for p in canonical]


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_helm_lint_strict(values: Path | None) -> None:
    args = ["lint", str(CHART), "--strict", "--namespace", "trove"]
    if values is not None:
        args += ["-f", str(values)]
    helm_run(*args)


def test_ci_value_sets_cover_the_branches() -> None:
    assert len(CI_VALUES) >= 5
    merged = "\n".join(p.read_text() for p in CI_VALUES)
    for switch in ("replicas: 2", "external:", "endpoint:", "ingress:", "serviceMonitor:", "enabled: false"):
        assert switch in merged


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_ci_values_render_consistent_objects(values: Path) -> None:
    docs = render("-f", str(values))
    for doc in docs:
        meta = doc["metadata"]
        assert meta["labels"]["app.kubernetes.io/instance"] == "t", meta["name"]
        assert len(meta["name"]) <= 63
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Namespace", "PriorityClass"):
            assert meta["namespace"] in ("trove", "t-sandboxes"), meta["name"]
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names))


# ── defaults ─────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def defaults() -> list[Doc]:
    return render()


def test_defaults_render_the_whole_release(defaults: list[Doc]) -> None:
    assert {d["metadata"]["name"] for d in defaults if d["kind"] == "Deployment"} == {
        "t-trove-api",
        "t-trove-operator",
        "t-trove-minio",
        "t-trove-postgresql",
    }
    assert "Ingress" not in kinds(defaults)
    assert "ServiceMonitor" not in kinds(defaults)
    assert "KopfPeering" not in kinds(defaults)
    assert {d["metadata"]["name"] for d in defaults if d["kind"] == "PersistentVolumeClaim"} == {
        "t-trove-postgresql",
        "t-trove-minio",
    }


def test_api_deployment_probes_security_and_settings(defaults: list[Doc]) -> None:
    api = find(defaults, "Deployment", "-api")
    spec = api["spec"]["template"]["spec"]
    [container] = spec["containers"]
    # PostgreSQL by default: two replicas that roll one at a time, a new one ready before an old one goes.
    assert api["spec"]["replicas"] == 2
    assert api["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert container["image"] == "trove:0.1.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"]["memory"] == "256Mi"
    assert spec["serviceAccountName"] == "t-trove-api"
    env = env_of(api)
    assert env["TROVE_RUNTIME"] == "kubernetes"
    assert env["TROVE_K8S_SANDBOX_IMAGE"] == "trove-sandbox:0.1.0"
    assert env["TROVE_K8S_NAMESPACE"] == "t-sandboxes"
    assert env["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": "t-trove-postgresql", "key": "password"}}
    assert env["TROVE_DATABASE_URL"] == (
        "postgresql+psycopg://trove:$(POSTGRES_PASSWORD)"
        "@$(T_TROVE_POSTGRESQL_SERVICE_HOST):$(T_TROVE_POSTGRESQL_SERVICE_PORT)/trove"
    )
    assert env["TROVE_SHUTDOWN_DRAIN_S"] == "5"
    assert env["TROVE_DATA_DIR"] == "/data"
    assert env["TROVE_ADMIN_KEY"] == {"secretKeyRef": {"name": "t-trove-admin-key", "key": "admin-key"}}
    # No DNS needed: MinIO's address comes from its Service's env vars.
    assert (
        env["TROVE_S3_ENDPOINT_URL"] == "http://$(T_TROVE_MINIO_SERVICE_HOST):$(T_TROVE_MINIO_SERVICE_PORT)"
    )
    assert env["TROVE_S3_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "t-trove-s3", "key": "access-key-id"}}
    assert spec["terminationGracePeriodSeconds"] > int(env["TROVE_SHUTDOWN_GRACE_S"]) + int(
        env["TROVE_SHUTDOWN_DRAIN_S"]
    )
    # Every setting the chart passes exists in Settings.
    from trove_core.settings import Settings

    fields = {f"TROVE_{name.upper()}" for name in Settings.model_fields}
    # (POSTGRES_PASSWORD only feeds $(POSTGRES_PASSWORD) in the database URL.)
    assert set(env) - {"POSTGRES_PASSWORD"} <= fields, set(env) - fields


def test_generated_secrets(defaults: list[Doc]) -> None:
    admin = find(defaults, "Secret", "-admin-key")
    key = base64.b64decode(admin["data"]["admin-key"]).decode()
    assert re.fullmatch(r"trove-sk-admin-[A-Za-z0-9]{43}", key)
    s3 = find(defaults, "Secret", "-s3")
    assert set(s3["data"]) == {"access-key-id", "secret-access-key"}
    dashboard = find(defaults, "Secret", "-dashboard")
    assert len(base64.b64decode(dashboard["data"]["session-secret"])) == 48
    assert env_of(find(defaults, "Deployment", "-api"))["TROVE_DASHBOARD_SECRET"] == {
        "secretKeyRef": {"name": "t-trove-dashboard", "key": "session-secret"}
    }
    minio = find(defaults, "Deployment", "-minio")
    env = env_of(minio)
    assert env["MINIO_ROOT_USER"] == {"secretKeyRef": {"name": "t-trove-s3", "key": "access-key-id"}}
    assert minio["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_operator_deployment(defaults: list[Doc]) -> None:
    operator = find(defaults, "Deployment", "-operator")
    [container] = operator["spec"]["template"]["spec"]["containers"]
    assert container["command"][0] == "trove-operator"
    assert "--standalone" in container["command"]
    assert "--namespace=$(TROVE_K8S_NAMESPACE)" in container["command"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "t-trove-operator"
    assert operator["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_operator_metrics_port_and_service(defaults: list[Doc]) -> None:
    operator = find(defaults, "Deployment", "-operator")
    [container] = operator["spec"]["template"]["spec"]["containers"]
    assert "--metrics-port=9090" in container["command"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    service = find(defaults, "Service", "-operator")
    assert service["spec"]["selector"] == operator["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    # The API's Service (and so its ServiceMonitor) never selects the operator's pods.
    api_service = find(defaults, "Service", "-api")
    assert api_service["spec"]["selector"]["app.kubernetes.io/component"] == "api"


def test_operator_metrics_can_move_or_go() -> None:
    moved = render("--set", "operator.metrics.port=9191")
    [container] = find(moved, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"]
    assert "--metrics-port=9191" in container["command"]
    assert find(moved, "Service", "-operator")["spec"]["ports"][0]["port"] == 9191
    off = render("--set", "operator.metrics.enabled=false")
    [container] = find(off, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"]
    assert "--metrics-port=0" in container["command"]  # not the CLI's default 9090
    assert [p["name"] for p in container["ports"]] == ["health"]
    assert not [d for d in off if d["kind"] == "Service" and d["metadata"]["name"].endswith("-operator")]


def test_rbac_verbs_are_exactly_what_the_code_calls(defaults: list[Doc]) -> None:
    api = find(defaults, "Role", "-api")
    assert rules(api) == {
        ("trove.dev", "trovenamespaces", "get"),
        ("trove.dev", "trovenamespaces", "list"),  # the template rollout's passes
        ("trove.dev", "trovenamespaces", "watch"),
        ("trove.dev", "trovenamespaces", "create"),
        ("trove.dev", "trovenamespaces", "patch"),
        ("trove.dev", "trovenamespaces", "delete"),
        ("", "pods/exec", "get"),
        ("", "pods/exec", "create"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
    }
    operator = find(defaults, "Role", "-operator")
    assert rules(operator) == {
        *{("trove.dev", "trovenamespaces", v) for v in ("get", "list", "watch", "patch")},
        ("trove.dev", "trovenamespaces/status", "get"),
        ("trove.dev", "trovenamespaces/status", "patch"),
        *{("trove.dev", "trovewarmpools", v) for v in ("get", "list", "watch", "patch")},
        ("trove.dev", "trovewarmpools/status", "get"),
        ("trove.dev", "trovewarmpools/status", "patch"),
        *{("", "pods", v) for v in ("get", "list", "watch", "create", "delete", "patch")},
        *{("", "persistentvolumeclaims", v) for v in ("get", "list", "create", "delete", "patch")},
        *{("networking.k8s.io", "networkpolicies", v) for v in ("get", "create", "patch")},
        ("", "events", "create"),
        ("events.k8s.io", "events", "create"),
    }
    cluster = find(defaults, "ClusterRole", "-operator-trove")
    assert rules(cluster) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }
    for binding in (d for d in defaults if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        [subject] = binding["subjects"]
        assert subject["namespace"] == "trove"


def test_uninstall_hook_deletes_trove_namespaces(defaults: list[Doc]) -> None:
    job = find(defaults, "Job", "-cleanup")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    assert "hook-succeeded" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    role = find(defaults, "Role", "-cleanup")
    assert rules(role) == {
        ("trove.dev", plural, v)
        for plural in ("trovenamespaces", "trovewarmpools")
        for v in ("list", "delete", "patch")
    }
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    compile(script, "<cleanup hook>", "exec")
    assert "Job" not in kinds(render("--set", "cleanup.onUninstall=false"))


# ── refusals: fail in templates, and the schema ──────────────────────────────


def test_replicas_above_one_need_postgresql() -> None:
    message = render_error("--set", "api.replicas=2", "--set", "postgresql.enabled=false")
    assert "api.replicas=2 needs PostgreSQL" in message
    assert "postgresql.enabled=true" in message
    assert "database.external.enabled=true" in message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "minio.enabled=false"], "needs snapshots.s3.endpoint"),
        (
            ["--set", "minio.enabled=false", "--set", "snapshots.s3.endpoint=http://10.1.2.3:9000"],
            "needs snapshots.s3.existingSecret",
        ),
        (
            ["--set", "snapshots.store=directory", "--set", "api.replicas=1"],
            "minio.enabled=true but snapshots.store=directory",
        ),
        (
            ["--set", "database.external.enabled=true", "--set", "postgresql.enabled=false"],
            "needs database.external.url",
        ),
        (
            ["--set", "database.external.enabled=true"],
            "postgresql.enabled=true and database.external.enabled=true",
        ),
        (
            ["--set", "api.ingress.enabled=true", "--set", "api.ingress.tls.enabled=true"],
            "needs api.ingress.host",
        ),
        (["--set", "operator.replicas=2"], "kopf peering CRDs"),
        (["--set", "operator.metrics.port=8080"], "operator.metrics.port=8080 is the operator's health port"),
        (
            [
                "--set",
                "api.replicas=2",
                "--set",
                "database.external.enabled=true",
                "--set",
                "database.external.url=postgresql://u:p@10.0.0.5/trove",
                "--set",
                "minio.enabled=false",
                "--set",
                "snapshots.store=directory",
                "--set",
                "postgresql.enabled=false",
            ],
            "needs snapshots.store=s3",
        ),
    ],
)
def test_template_refusals(args: list[str], message: str) -> None:
    assert message in render_error(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set-string", "api.replicas=x"], "api.replicas: Invalid type. Expected: integer, given: string"),
        (["--set", "api.replicas=0"], "api.replicas: Must be greater than or equal to 1"),
        (["--set", "api.bogus=1"], "api: Additional property bogus is not allowed"),
        (["--set", "bogus=1"], "Additional property bogus is not allowed"),
        (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy: image.pullPolicy must be one of"),
        (["--set", "api.adminKey.value=hunter2"], "api.adminKey.value: Does not match pattern"),
        (["--set", "snapshots.store=gcs"], "snapshots.store: snapshots.store must be one of"),
        (["--set", "sandbox.storageSize=lots"], "sandbox.storageSize: Does not match pattern"),
        (
            ["--set", "sandbox.rolloutIdleSeconds=60"],
            "rolloutIdleSeconds: Must be greater than or equal to 120",
        ),
        (["--set", "operator.metrics.port=0"], "operator.metrics.port: Must be greater than or equal to 1"),
        (["--set", "operator.metrics.bogus=1"], "operator.metrics: Additional property bogus is not allowed"),
    ],
)
def test_schema_rejects_bad_values(args: list[str], message: str) -> None:
    assert message in render_error(*args)


def test_values_are_documented_and_schema_bound() -> None:
    text = (CHART / "values.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"
    documented = set(re.findall(r"^\s*## @param (\S+)", text, re.M))

    def leaves(node: Any, prefix: str) -> Iterator[str]:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                path = f"{prefix}.{key}" if prefix else key
                if path in documented:
                    yield path
                else:
                    yield from leaves(value, path)
        else:
            yield prefix

    values = yaml.safe_load(text)
    missing = [path for path in leaves(values, "") if path not in documented]
    assert missing == []
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
