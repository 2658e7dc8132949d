"""The chart's value branches (ci/*-values.yaml and inline sets) and NOTES.txt, via `helm template`."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from tests.support.helm import CHART, env_of, find, kinds, render, rules
from trove_api.runtimes.kubernetes.namespaces import build_tns
from trove_core.runtime import NamespaceRef
from trove_core.settings import Settings
from trove_operator import builders
from trove_operator.spec import SandboxTemplate, TroveNamespaceSpec

# ── value branches ───────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "policy/v1"),
        (["--kube-version", "1.20.2"], "policy/v1beta1"),
        (["--kube-version", "1.20.2", "--api-versions", "policy/v1beta1"], "policy/v1beta1"),
        (["--kube-version", "1.25.0", "--api-versions", "policy/v1"], "policy/v1"),
    ],
)
def test_pdb_api_version_follows_the_cluster(args: list[str], expected: str) -> None:
    pdb = find(render(*args), "PodDisruptionBudget")
    assert pdb["apiVersion"] == expected
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "api"


def test_external_postgres_and_two_replicas() -> None:
    docs = render("-f", str(CHART / "ci" / "01-postgres-replicas-values.yaml"))
    api = find(docs, "Deployment", "-api")
    assert api["spec"]["replicas"] == 2
    assert api["spec"]["strategy"]["type"] == "RollingUpdate"
    assert env_of(api)["TROVE_DATABASE_URL"] == {"secretKeyRef": {"name": "trove-postgres", "key": "url"}}
    assert next(v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "data") == {
        "name": "data",
        "emptyDir": {},
    }
    assert not [d for d in docs if d["metadata"]["name"] == "t-trove-api-data"]
    inline = render(
        "--set",
        "database.external.enabled=true",
        "--set",
        "database.external.url=postgresql://u:p@10.0.0.5/t",
        "--set",
        "postgresql.enabled=false",
    )
    secret = find(inline, "Secret", "-database")
    assert base64.b64decode(secret["data"]["database-url"]) == b"postgresql://u:p@10.0.0.5/t"


def test_external_s3_by_ip_with_existing_secret() -> None:
    docs = render("-f", str(CHART / "ci" / "02-external-s3-values.yaml"))
    assert not [d for d in docs if "minio" in d["metadata"]["name"] or d["metadata"]["name"].endswith("-s3")]
    env = env_of(find(docs, "Deployment", "-api"))
    assert env["TROVE_S3_ENDPOINT_URL"] == "http://10.244.0.1:8333"
    assert env["TROVE_S3_BUCKET"] == "trove-snaps"
    assert env["TROVE_S3_CREATE_BUCKET"] == "false"
    assert env["TROVE_S3_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    }


def test_ingress_with_class_host_and_tls() -> None:
    docs = render("-f", str(CHART / "ci" / "03-ingress-tls-values.yaml"))
    ingress = find(docs, "Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["trove.example.com"], "secretName": "trove-example-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "trove.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "t-trove-api", "port": {"name": "http"}}
    admin = find(docs, "Secret", "-admin-key")
    assert base64.b64decode(admin["data"]["admin-key"]).startswith(b"trove-sk-admin-ci000")


def test_servicemonitor_only_when_enabled() -> None:
    docs = render("-f", str(CHART / "ci" / "04-servicemonitor-values.yaml"))
    monitor = find(docs, "ServiceMonitor", "-api")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    operator = find(docs, "Deployment", "-operator")
    assert "--verbose" in operator["spec"]["template"]["spec"]["containers"][0]["command"]
    # The same toggle covers the operator: its monitor selects exactly the operator's Service.
    operator_monitor = find(docs, "ServiceMonitor", "-operator")
    assert operator_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert operator_monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    selector = operator_monitor["spec"]["selector"]["matchLabels"]
    services = [
        d for d in docs if d["kind"] == "Service" and selector.items() <= d["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in services] == ["t-trove-operator"]
    assert [p["name"] for p in services[0]["spec"]["ports"]] == ["metrics"]
    assert operator_monitor["spec"]["namespaceSelector"] == {"matchNames": ["trove"]}
    # Without the operator's endpoint there is nothing for its monitor to scrape.
    off = render(
        "-f", str(CHART / "ci" / "04-servicemonitor-values.yaml"), "--set", "operator.metrics.enabled=false"
    )
    assert [d["metadata"]["name"] for d in off if d["kind"] == "ServiceMonitor"] == ["t-trove-api"]


def test_minio_off_directory_store_local_images() -> None:
    docs = render("-f", str(CHART / "ci" / "05-minio-off-directory-values.yaml"))
    assert not [d for d in docs if "minio" in d["metadata"]["name"]]
    assert "PodDisruptionBudget" not in kinds(docs)
    assert "ServiceAccount" not in {d["kind"] for d in docs if d["metadata"]["name"].endswith("-api")}
    api = find(docs, "Deployment", "-api")
    spec = api["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "trove-existing"
    assert spec["containers"][0]["image"] == "trove:dev"
    assert spec["containers"][0]["imagePullPolicy"] == "Never"
    assert spec["initContainers"][0]["command"][2].endswith("|| chown 10001:10001 /data")
    env = env_of(api)
    assert env["TROVE_SNAPSHOT_STORE"] == "directory"
    assert env["TROVE_K8S_SANDBOX_IMAGE"] == "trove-sandbox:dev"
    assert "TROVE_S3_BUCKET" not in env


def test_existing_admin_key_secret_is_used_not_rendered() -> None:
    docs = render("--set", "api.adminKey.existingSecret=mine", "--set", "api.adminKey.existingSecretKey=k")
    assert not [d for d in docs if d["metadata"]["name"].endswith("-admin-key")]
    assert env_of(find(docs, "Deployment", "-api"))["TROVE_ADMIN_KEY"] == {
        "secretKeyRef": {"name": "mine", "key": "k"}
    }


def test_operator_replicas_use_kopf_peering() -> None:
    docs = render("--set", "operator.replicas=2", "--api-versions", "kopf.dev/v1")
    peering = find(docs, "KopfPeering")
    command = find(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert f"--peering={peering['metadata']['name']}" in command
    assert "--standalone" not in command
    assert ("kopf.dev", "kopfpeerings", "patch") in rules(find(docs, "Role", "-operator"))


# ── NOTES.txt ────────────────────────────────────────────────────────────────


def render_notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt rendered by helm itself (``helm template`` skips it; install needs a cluster)."""
    chart = tmp_path / "trove"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "NOTES.render")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "NOTES.render") . | quote }}\n'
    )
    docs = render("--show-only", "templates/zz-notes.yaml", *args, chart=chart)
    return str(docs[0]["data"]["notes"])


def test_notes_print_the_admin_key_command_and_a_first_sdk_call(tmp_path: Path) -> None:
    notes = render_notes(tmp_path)
    assert (
        'kubectl get secret --namespace trove t-trove-admin-key -o jsonpath="{.data.admin-key}" | base64 -d'
        in notes
    )
    assert "kubectl port-forward --namespace trove svc/t-trove-api 8080:80" in notes
    assert "TroveAdminClient.from_api_key" in notes
    assert "kubectl get trovenamespaces --namespace t-sandboxes" in notes
    assert "kubectl delete crd trovenamespaces.trove.dev" in notes
    ingress = render_notes(tmp_path / "i", "-f", str(CHART / "ci" / "03-ingress-tls-values.yaml"))
    assert "export TROVE_URL=https://trove.example.com" in ingress
    assert "port-forward" not in ingress


def test_external_s3_with_inline_credentials_gets_a_chart_secret() -> None:
    docs = render(
        "--set",
        "minio.enabled=false",
        "--set",
        "snapshots.s3.endpoint=https://s3.example.net",
        "--set",
        "snapshots.s3.accessKeyId=AKIDEXAMPLE",
        "--set",
        "snapshots.s3.secretAccessKey=wJalrXUtnFEMI",
    )
    secret = find(docs, "Secret", "-s3")
    assert base64.b64decode(secret["data"]["access-key-id"]) == b"AKIDEXAMPLE"
    assert base64.b64decode(secret["data"]["secret-access-key"]) == b"wJalrXUtnFEMI"
    env = env_of(find(docs, "Deployment", "-api"))
    assert env["TROVE_S3_ENDPOINT_URL"] == "https://s3.example.net"
    assert env["TROVE_S3_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "t-trove-s3", "key": "access-key-id"}}


# ── warm pool ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--set", "sandbox.resources.limits.cpu=0.5", "--set", "sandbox.storageClass=fast"],
        [
            "--set",
            "sandbox.storageSize=5Gi",
            "--set",
            "sandbox.image.tag=dev",
            "--set",
            "sandbox.warmPool.size=7",
        ],
    ],
)
def test_warm_pool_template_fits_the_namespaces_the_api_creates(args: list[str]) -> None:
    """The API builds each TroveNamespace from its TROVE_K8S_* env; the pool's template must
    produce the very same sandbox, or no namespace would ever claim a waiting one."""
    docs = render(*args)
    pool = find(docs, "TroveWarmPool")
    assert pool["spec"]["size"] == (7 if "sandbox.warmPool.size=7" in args else 2)
    env = {k: v for k, v in env_of(find(docs, "Deployment", "-api")).items() if isinstance(v, str)}
    settings = Settings.model_validate(
        {k.removeprefix("TROVE_").lower(): v for k, v in env.items() if k.startswith("TROVE_K8S_")}
    )
    tns = build_tns(settings, NamespaceRef(workspace_id="ws-1", name="alice"))
    spec = TroveNamespaceSpec.model_validate(tns["spec"])
    template = SandboxTemplate.model_validate(pool["spec"]["template"])
    assert builders.build_pod_spec("x", template) == builders.build_pod_spec("x", spec)
    assert builders.build_pvc_spec(template) == builders.build_pvc_spec(spec)


def test_warm_pool_off() -> None:
    assert "TroveWarmPool" not in kinds(render("--set", "sandbox.warmPool.size=0"))


@pytest.mark.parametrize(("args", "expected"), [([], 300), (["--set", "sandbox.idleSuspendSeconds=90"], 90)])
def test_idle_suspend_reaches_the_api_and_the_namespaces_it_creates(args: list[str], expected: int) -> None:
    env = env_of(find(render(*args), "Deployment", "-api"))
    assert env["TROVE_K8S_IDLE_SUSPEND_S"] == str(expected)
    settings = Settings.model_validate({"k8s_idle_suspend_s": env["TROVE_K8S_IDLE_SUSPEND_S"]})
    tns = build_tns(settings, NamespaceRef(workspace_id="ws-1", name="alice"))
    assert TroveNamespaceSpec.model_validate(tns["spec"]).idle_suspend_seconds == expected


@pytest.mark.parametrize(
    ("args", "expected"), [([], 180.0), (["--set", "sandbox.rolloutIdleSeconds=600"], 600.0)]
)
def test_rollout_idle_reaches_the_api(args: list[str], expected: float) -> None:
    env = env_of(find(render(*args), "Deployment", "-api"))
    settings = Settings.model_validate({"k8s_rollout_idle_s": env["TROVE_K8S_ROLLOUT_IDLE_S"]})
    assert settings.k8s_rollout_idle_s == expected
    if not args:  # the chart's default is the API's own
        assert expected == Settings.model_fields["k8s_rollout_idle_s"].default


def test_notes_warn_of_an_ingress_without_tls_and_of_pod_pids(tmp_path: Path) -> None:
    plain = render_notes(tmp_path / "plain", "--set", "api.ingress.enabled=true")
    assert "WARNING: the ingress serves plain HTTP" in plain
    assert "/cli" in plain
    tls = render_notes(
        tmp_path / "tls",
        "--set",
        "api.ingress.enabled=true",
        "--set",
        "api.ingress.host=trove.example.com",
        "--set",
        "api.ingress.tls.enabled=true",
    )
    assert "plain HTTP" not in tls
    assert "plain HTTP" not in render_notes(tmp_path / "none")
    for notes in (plain, tls):
        assert "podPidsLimit" in notes
        assert "1024 processes" in notes
