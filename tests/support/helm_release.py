"""A Helm release of charts/trove on the e2e cluster: values for local images, install, connect, leftovers.

Each release gets a fresh ``trove-chart-<hex>`` namespace, and its sandboxes (TroveNamespaces,
the warm pool, sandbox pods) ``trove-chart-<hex>-sandboxes``, made by the chart. No MinIO image
can be built on our machines, so snapshots go to a real S3 process (SeaweedFS) that listens on the host's CNI
gateway, which pods reach without DNS. The API is reached from the host on its Service's
ClusterIP (kube-proxy routes it).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.cluster import sandbox_host, skip_or_fail, wait_for
from tests.support.s3 import S3Server, start_s3
from tests.support.sdk import admin

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "trove"
RELEASE = "trove"
CRD = "trovenamespaces.trove.dev"
POOL_CRD = "trovewarmpools.trove.dev"
TROVE_IMAGE = os.environ.get("TROVE_E2E_TROVE_IMAGE", "trove:0.1.0")
SANDBOX_IMAGE = os.environ.get("TROVE_K8S_SANDBOX_IMAGE", "trove-sandbox:0.1.0")
# What a namespace holds with no release in it.
BASELINE = {"configmap/kube-root-ca.crt", "serviceaccount/default"}
NAMESPACED_KINDS = (
    "trovenamespaces,trovewarmpools,deployments,replicasets,pods,services,persistentvolumeclaims,secrets,configmaps,"
    "serviceaccounts,roles,rolebindings,networkpolicies,jobs,ingresses,poddisruptionbudgets"
)


@dataclass
class Release:
    """What the seed tests read from a LiveServer (base_url and keys), for a Helm release."""

    namespace: str
    s3: S3Server
    bucket: str
    values: tuple[str, ...] = ()
    base_url: str = ""
    admin_key: str = ""
    workspace_id: str = ""
    workspace_key: str = ""
    notes: str = ""
    uninstalled: bool = False

    @property
    def sandboxes(self) -> str:
        """The chart's sandbox namespace (``sandbox.namespace.name``): one per release here,
        since the default ``<release>-sandboxes`` would be the same for every e2e release."""
        return f"{self.namespace}-sandboxes"


def run(*argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def upgrade(release: Release, *options: str, timeout_s: int = 300) -> subprocess.CompletedProcess[str]:
    """``helm upgrade --wait`` of the release with ``options`` (``--set``, ``--reuse-values``, …)."""
    return run(
        "helm",
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        release.namespace,
        *options,
        "--wait",
        "--timeout",
        f"{timeout_s}s",
        timeout=timeout_s + 60,
    )


def kubectl(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("kubectl", *argv, check=check, timeout=60)


def require_cluster() -> None:
    if not os.environ.get("KUBECONFIG"):
        skip_or_fail("no cluster configured: set KUBECONFIG (../shared/k8s/cluster.sh up, or kind)")
    for tool in ("helm", "kubectl"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} is not installed (../shared/k8s/tools.sh installs it)")
    if kubectl("version", "--request-timeout=5s", check=False).returncode != 0:
        skip_or_fail("the cluster at $KUBECONFIG is unreachable")


def _image(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(merged.get(key), dict) else value
    return merged


def values_file(release: Release, path: Path, extra: dict[str, Any] | None = None) -> list[str]:
    """``-f values.yaml`` for this cluster: local images, small requests, the host's S3."""
    repository, tag = _image(TROVE_IMAGE)
    sandbox_repository, sandbox_tag = _image(SANDBOX_IMAGE)
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "sandbox": {
            "namespace": {"name": release.sandboxes},
            "image": {"repository": sandbox_repository, "tag": sandbox_tag, "pullPolicy": "IfNotPresent"},
            # The fork-bomb test reaches the cap without crowding a node shared by other runs.
            "maxProcesses": 256,
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
    path.write_text(yaml.safe_dump(_merge(values, extra or {})))
    return ["-f", str(path)]


def admin_key_from_secret(namespace: str) -> str:
    """The NOTES.txt command: kubectl get secret … -o jsonpath=… | base64 -d."""
    out = kubectl(
        "get", "secret", "-n", namespace, f"{RELEASE}-admin-key", "-o", "jsonpath={.data.admin-key}"
    ).stdout
    return base64.b64decode(out).decode()


def connect(release: Release) -> None:
    """The Service's ClusterIP, the admin key from its Secret, a workspace key minted with it."""
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


@contextmanager
def installed(
    tmp: Path, extra: dict[str, Any] | None = None, secrets_: dict[str, dict[str, str]] | None = None
) -> Iterator[Release]:
    """``helm install --wait`` into a fresh namespace; uninstalled and deleted afterwards."""
    require_cluster()
    namespace = f"trove-chart-{secrets.token_hex(4)}"
    with ExitStack() as stack:
        try:
            s3 = stack.enter_context(start_s3(host=sandbox_host()))
        except (OSError, RuntimeError) as exc:
            skip_or_fail(f"cannot serve S3 on {sandbox_host()} for the cluster's pods: {exc}")
        release = Release(namespace=namespace, s3=s3, bucket=f"trove-chart-{secrets.token_hex(3)}")
        release.values = tuple(values_file(release, tmp / "e2e-values.yaml", extra))
        try:
            # Helm installs CRDs only when absent and never upgrades them: as the README says, apply them.
            kubectl("apply", "-f", str(ROOT / "crds" / "trovenamespaces.trove.dev.yaml"))
            kubectl("apply", "-f", str(ROOT / "crds" / "trovewarmpools.trove.dev.yaml"))
            # Helm validates against the published OpenAPI, which follows a CRD change a moment later.
            published = ("explain", "trovewarmpools.spec.priorityClassName")
            wait_for(
                lambda: kubectl(*published, check=False).returncode == 0,
                timeout=60,
                what="the TroveWarmPool schema to be published",
            )
            kubectl("create", "namespace", namespace)
            given = {"e2e-s3": {"access-key-id": s3.access_key_id, "secret-access-key": s3.secret_access_key}}
            for name, data in {**given, **(secrets_ or {})}.items():
                literals = [f"--from-literal={key}={value}" for key, value in data.items()]
                kubectl("create", "secret", "generic", name, "-n", namespace, *literals)
            done = run(
                "helm",
                "install",
                RELEASE,
                str(CHART),
                "-n",
                namespace,
                *release.values,
                "--wait",
                "--timeout",
                "180s",
            )
            release.notes = done.stdout
            connect(release)
            yield release
        finally:
            if not release.uninstalled:
                run("helm", "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "120s", check=False)
            kubectl("delete", "namespace", namespace, release.sandboxes, "--wait=false", check=False)


def leftovers(namespace: str, ignore: set[str] | None = None) -> list[str]:
    """Objects in the namespace beyond what an empty namespace holds (and ``ignore``)."""
    names = kubectl("get", NAMESPACED_KINDS, "-n", namespace, "-o", "name").stdout.split()
    expected = BASELINE | (ignore or set())
    return [n for n in names if n not in expected and not n.startswith("secret/default-token-")]
