"""The Helm chart on a real cluster: install, the seed snippets through the API Service, upgrade, uninstall.

One release per test module, in a fresh ``trove-chart-<hex>`` namespace, with the locally built
images (``make images``). No MinIO image can be built here, so snapshots go to a real S3 process
(SeaweedFS) on the host's CNI gateway address, which pods reach without DNS. The seed 000/001
tests of tests/contract/test_seed_snippets.py are imported and run unchanged: the ``server``
fixture below points them at the release's Service (ClusterIP, reachable from the host through
kube-proxy) with the chart's admin key and a workspace key minted with it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from trove_sdk import TroveClient

from tests.contract.test_seed_snippets import (
    api_example,  # noqa: F401 - fixtures the imported seed tests use (served on sandbox_host())
    in_tmp_cwd,  # noqa: F401
    test_seed000_async,  # noqa: F401 - collected here: runs against the Helm release
    test_seed000_filesystem_operations,  # noqa: F401
    test_seed000_key_management,  # noqa: F401
    test_seed001_bootstrap,  # noqa: F401
    test_seed001_exec,  # noqa: F401
    test_seed001_exec_chain,  # noqa: F401
    test_seed001_init_manage,  # noqa: F401
    test_seed001_init_sh,  # noqa: F401
    test_seed001_manage_keys_and_revoke_on_churn,  # noqa: F401
    test_seed001_multi_tenancy,  # noqa: F401
    test_seed001_per_session_sandboxes,  # noqa: F401
    test_seed001_quickstart,  # noqa: F401
    test_seed001_write_upload_delete,  # noqa: F401
)
from tests.support.cluster import sandbox_host, skip_or_fail, wait_for
from tests.support.s3 import S3Server, start_s3
from tests.support.sdk import admin, client

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "trove"
RELEASE = "trove"
TROVE_IMAGE = os.environ.get("TROVE_E2E_TROVE_IMAGE", "trove:0.1.0")
SANDBOX_IMAGE = os.environ.get("TROVE_K8S_SANDBOX_IMAGE", "trove-sandbox:0.1.0")
CRD = "trovenamespaces.trove.dev"


@dataclass
class Release:
    """What the seed tests read from a LiveServer, for the Helm release."""

    namespace: str
    s3: S3Server
    bucket: str
    base_url: str = ""
    admin_key: str = ""
    workspace_id: str = ""
    workspace_key: str = ""
    notes: str = ""
    values: tuple[str, ...] = ()
    uninstalled: bool = False


def run(*argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def kubectl(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("kubectl", *argv, check=check, timeout=60)


def _image(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


def helm_values(release: Release, tmp: Path) -> list[str]:
    """``-f values.yaml`` for this cluster: local images, small requests, the host's S3."""
    repository, tag = _image(TROVE_IMAGE)
    sandbox_repository, sandbox_tag = _image(SANDBOX_IMAGE)
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "sandbox": {
            "image": {"repository": sandbox_repository, "tag": sandbox_tag, "pullPolicy": "IfNotPresent"},
            "storageSize": "64Mi",
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
            "idleSuspendSeconds": 120,
            # The node is shared with other e2e runs: give a new pod the longest wait allowed.
            "readyTimeoutSeconds": 29,
        },
        "api": {"resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}, "shutdownGraceSeconds": 5},
        "operator": {"resources": {"requests": {"cpu": "20m", "memory": "128Mi"}}},
        # The host-path provisioner hands out root-owned directories.
        "volumePermissions": {"enabled": True},
        "minio": {"enabled": False},
        "snapshots": {
            "store": "s3",
            "s3": {"endpoint": release.s3.endpoint_url, "existingSecret": "e2e-s3", "bucket": release.bucket},
        },
        "cleanup": {"timeoutSeconds": 60},
    }
    path = tmp / "e2e-values.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def _cluster_or_skip() -> None:
    if not os.environ.get("KUBECONFIG"):
        skip_or_fail("no cluster configured: set KUBECONFIG (../shared/k8s/cluster.sh up, or kind)")
    for tool in ("helm", "kubectl"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} is not installed (../shared/k8s/tools.sh installs it)")
    if kubectl("version", "--request-timeout=5s", check=False).returncode != 0:
        skip_or_fail("the cluster at $KUBECONFIG is unreachable")


def admin_key_from_secret(namespace: str) -> str:
    """The NOTES.txt command: kubectl get secret … -o jsonpath=… | base64 -d."""
    out = kubectl(
        "get", "secret", "-n", namespace, f"{RELEASE}-admin-key", "-o", "jsonpath={.data.admin-key}"
    ).stdout
    return base64.b64decode(out).decode()


def connect(release: Release) -> None:
    """The Service's ClusterIP (kube-proxy routes it from the host), the admin key, a workspace key."""
    ip = kubectl("get", "svc", "-n", release.namespace, f"{RELEASE}-api", "-o", "jsonpath={.spec.clusterIP}")
    release.base_url = f"http://{ip.stdout.strip()}:80"
    release.admin_key = admin_key_from_secret(release.namespace)
    me = httpx.get(
        f"{release.base_url}/v1/me", headers={"Authorization": f"Bearer {release.admin_key}"}, timeout=10
    )
    me.raise_for_status()
    release.workspace_id = me.json()["workspace_id"]
    with admin(release) as adm:  # type: ignore[arg-type]
        release.workspace_key = adm.create_key("e2e-workspace").api_key


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    _cluster_or_skip()
    namespace = f"trove-chart-{secrets.token_hex(4)}"
    # Pods reach the host on the CNI bridge's gateway (no DNS): S3 listens there.
    s3_context = start_s3(host=sandbox_host())
    try:
        s3 = s3_context.__enter__()
    except (OSError, RuntimeError) as exc:
        skip_or_fail(f"cannot serve S3 on {sandbox_host()} for the cluster's pods: {exc}")
    rel = Release(namespace=namespace, s3=s3, bucket=f"trove-chart-{secrets.token_hex(3)}")
    tmp = tmp_path_factory.mktemp("helm")
    rel.values = tuple(helm_values(rel, tmp))
    try:
        kubectl("create", "namespace", namespace)
        kubectl(
            "create",
            "secret",
            "generic",
            "e2e-s3",
            "-n",
            namespace,
            f"--from-literal=access-key-id={s3.access_key_id}",
            f"--from-literal=secret-access-key={s3.secret_access_key}",
        )
        installed = run(
            "helm",
            "install",
            RELEASE,
            str(CHART),
            "-n",
            namespace,
            *rel.values,
            "--wait",
            "--timeout",
            "180s",
        )
        rel.notes = installed.stdout
        connect(rel)
        yield rel
    finally:
        if not rel.uninstalled:
            run("helm", "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "120s", check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        s3_context.__exit__(None, None, None)


@pytest.fixture
def server(release: Release) -> Release:
    """The seed tests' ``server``: the Helm release instead of a local process."""
    return release


@pytest.fixture
def trove(release: Release, namespace: str) -> Iterator[TroveClient]:
    with client(release, namespace) as sdk:  # type: ignore[arg-type]
        yield sdk


# ── the release itself (these run after the imported seed tests) ─────────────


def test_install_notes_and_objects(release: Release) -> None:
    assert f"kubectl get secret --namespace {release.namespace} {RELEASE}-admin-key" in release.notes
    assert "TroveAdminClient.from_api_key" in release.notes
    pods = json.loads(kubectl("get", "pods", "-n", release.namespace, "-o", "json").stdout)["items"]
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
    assert {"api", "operator"} <= components
    pdb = json.loads(kubectl("get", "pdb", "-n", release.namespace, "-o", "json").stdout)["items"]
    assert [p["apiVersion"] for p in pdb] in (["policy/v1beta1"], ["policy/v1"])
    assert kubectl("get", "crd", CRD, check=False).returncode == 0


def test_snapshot_goes_to_the_external_s3(release: Release, trove: TroveClient) -> None:
    trove.write("workspace/keep.txt", "kept\n")
    snapshot = trove.create_snapshot()
    listed = release.s3.client().list_objects_v2(Bucket=release.bucket)  # type: ignore[attr-defined]
    assert any(snapshot.snapshot_id in obj["Key"] for obj in listed.get("Contents", []))


def test_upgrade_keeps_the_admin_key_and_data(release: Release) -> None:
    key_before = release.admin_key
    with client(release, "upgrade-check") as agent:  # type: ignore[arg-type]
        agent.write("workspace/before.txt", "written before the upgrade\n")
    api_pods_before = kubectl(
        "get", "pods", "-n", release.namespace, "-l", "app.kubernetes.io/component=api", "-o", "name"
    ).stdout.split()
    run(
        "helm",
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        release.namespace,
        *release.values,
        "--set-string",
        "api.logLevel=debug",  # changes the pod template, so the API pod is replaced
        "--wait",
        "--timeout",
        "180s",
    )
    assert admin_key_from_secret(release.namespace) == key_before
    wait_for(
        lambda: (
            not set(api_pods_before)
            & set(
                kubectl(
                    "get",
                    "pods",
                    "-n",
                    release.namespace,
                    "-l",
                    "app.kubernetes.io/component=api",
                    "-o",
                    "name",
                ).stdout.split()
            )
        ),
        timeout=120,
        what="the old API pod to go",
    )
    # The same workspace key still works: the SQLite database lives on the API's PVC.
    with client(release, "upgrade-check") as agent:  # type: ignore[arg-type]
        assert agent.read_text("workspace/before.txt") == "written before the upgrade\n"
        assert agent.exec("cat workspace/before.txt") == "written before the upgrade\n"


def test_uninstall_leaves_only_the_crd(release: Release) -> None:
    ns = release.namespace
    assert json.loads(kubectl("get", "trovenamespaces", "-n", ns, "-o", "json").stdout)["items"]
    run("helm", "uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "180s")
    release.uninstalled = True
    kubectl("delete", "secret", "-n", ns, "e2e-s3")
    kinds = (
        "trovenamespaces,deployments,replicasets,pods,services,persistentvolumeclaims,secrets,configmaps,"
        "serviceaccounts,roles,rolebindings,networkpolicies,jobs,ingresses,poddisruptionbudgets"
    )

    def leftovers() -> list[str]:
        names = kubectl("get", kinds, "-n", ns, "-o", "name").stdout.split()
        expected = {"configmap/kube-root-ca.crt", "serviceaccount/default"}
        return [n for n in names if n not in expected and not n.startswith("secret/default-token-")]

    def gone() -> bool:
        return not leftovers()

    try:
        wait_for(gone, timeout=120, what="the release's objects to go")
    except AssertionError:
        raise AssertionError(f"left behind in {ns}: {leftovers()}") from None
    cluster_wide = kubectl(
        "get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    ).stdout.split()
    assert [n for n in cluster_wide if ns in n] == []
    # Helm keeps CRDs by design (the README says how to remove it).
    assert kubectl("get", "crd", CRD, check=False).returncode == 0
