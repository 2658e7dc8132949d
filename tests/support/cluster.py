"""A real Kubernetes cluster for e2e runs: reachability check, CRDs, a test namespace, the operator.

Nothing here runs unless ``TROVE_TEST_BACKEND=kubernetes`` (``make e2e``). Without a reachable
``$KUBECONFIG`` the tests skip with the reason, and under ``TROVE_E2E_REQUIRED=1`` (CI) that
skip becomes a failure. The operator runs as a real ``python -m trove_operator`` subprocess
watching one fresh ``trove-test-<hex>`` namespace; one is shared per test process and torn
down (namespace deleted, operator stopped) at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).parents[2]
CRDS = [
    ROOT / "crds" / "trovenamespaces.trove.dev.yaml",
    ROOT / "crds" / "trovewarmpools.trove.dev.yaml",
    ROOT / "crds" / "kopf-peering.yaml",
]
SANDBOX_IMAGE = os.environ.get("TROVE_K8S_SANDBOX_IMAGE", "trove-sandbox:0.1.0")


def backend() -> str:
    return os.environ.get("TROVE_TEST_BACKEND", "local")


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("TROVE_E2E_REQUIRED") == "1":
        pytest.fail(f"e2e required (TROVE_E2E_REQUIRED=1) but: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Cluster:
    kubeconfig: str
    namespace: str
    api: client.ApiClient
    operator: subprocess.Popen[bytes] | None
    operator_log: Path
    # The operator subprocess's Prometheus endpoint (http://127.0.0.1:<port>/metrics).
    metrics_url: str | None = None

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def networking(self) -> client.NetworkingV1Api:
        return client.NetworkingV1Api(self.api)

    def settings_overrides(self) -> dict[str, Any]:
        return {
            "runtime": "kubernetes",
            "k8s_namespace": self.namespace,
            "k8s_sandbox_image": SANDBOX_IMAGE,
            "k8s_image_pull_policy": "Never",
            "k8s_kubeconfig": Path(self.kubeconfig),
            "k8s_in_cluster": False,
            "k8s_storage_size": "64Mi",
            "k8s_memory_request": "16Mi",
            "k8s_cpu_request": "10m",
            # Many short-lived test namespaces on one node: let idle pods go quickly.
            "k8s_idle_suspend_s": 120,
            "k8s_channel_idle_s": 60,
            # Many API servers with different settings share one cluster namespace in a run: one
            # must not roll another's namespaces to its template (tests/e2e/test_rollout sets it).
            "k8s_rollout": "never",
        }


def sandbox_host() -> str:
    """Where a test's helper HTTP server must listen so the sandbox can reach it.

    Local sandboxes share the host's loopback; pods reach the host through the CNI bridge
    gateway (``../shared/k8s``: 10.244.0.1; kind users set ``TROVE_TEST_POD_GATEWAY``).
    """
    if backend() != "kubernetes":
        return "127.0.0.1"
    given = os.environ.get("TROVE_TEST_POD_GATEWAY")
    if given:
        return given
    _ensure_pod_network(_DEFAULT_GATEWAY)
    return _DEFAULT_GATEWAY


_DEFAULT_GATEWAY = "10.244.0.1"
_gateway_ready = False


def _address_is_local(address: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def _ensure_pod_network(address: str) -> None:
    """Make the CNI bridge exist, so host-side test servers can bind its gateway address.

    The bridge (and its address) appears only with the node's first pod; on a freshly started
    cluster a test may need it before any pod exists, so one throwaway pod brings it up.
    """
    global _gateway_ready
    if _gateway_ready or _address_is_local(address):
        _gateway_ready = True
        return
    _, api = _reachable()
    core = client.CoreV1Api(api)
    name = f"trove-net-probe-{secrets.token_hex(3)}"
    core.create_namespaced_pod(
        "default",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "probe",
                        "image": SANDBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "120"],
                    }
                ],
            },
        },
    )
    try:
        deadline = time.monotonic() + 90
        while not _address_is_local(address) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
    if not _address_is_local(address):
        skip_or_fail(f"the pod network's gateway {address} never appeared on this host")
    _gateway_ready = True


def runtime_env(settings: Any) -> dict[str, str]:
    """``TROVE_*`` variables that give a ``trove-server`` subprocess the same runtime as ``settings``."""
    if settings.runtime != "kubernetes":
        return {}
    env = {"TROVE_RUNTIME": "kubernetes"}
    for field in type(settings).model_fields:
        value = getattr(settings, field)
        if field.startswith("k8s_") and value is not None:
            env[f"TROVE_{field.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


_CLUSTER: Cluster | None = None
_UNAVAILABLE: str | None = None


def _reachable() -> tuple[str, client.ApiClient]:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        skip_or_fail("no cluster configured: set KUBECONFIG (../shared/k8s/cluster.sh up, or kind)")
    if not Path(kubeconfig).is_file():
        skip_or_fail(f"KUBECONFIG={kubeconfig} does not exist")
    try:
        api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:
        skip_or_fail(f"cluster at KUBECONFIG={kubeconfig} is unreachable: {exc!r}")
    return kubeconfig, api


def install_crds(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    for path in CRDS:
        for doc in yaml.safe_load_all(path.read_text()):
            try:
                ext.create_custom_resource_definition(doc)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                live = ext.read_custom_resource_definition(doc["metadata"]["name"])
                doc["metadata"]["resourceVersion"] = live.metadata.resource_version
                ext.replace_custom_resource_definition(doc["metadata"]["name"], doc)
    # A freshly created CRD is served a moment later.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.CustomObjectsApi(api).list_namespaced_custom_object(
                "trove.dev", "v1alpha1", "default", "trovenamespaces", limit=1
            )
            return
        except ApiException:
            time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_operator(
    kubeconfig: str, namespace: str, log_path: Path, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    """``metrics_port`` 0: no metrics endpoint (not the CLI's 9090, which parallel runs would share)."""
    # Idle checks every 2 s (not 30), pool top-ups every 1 s (not 5) and the safety-net re-sync
    # every 20 s (not 300): tests see them within a wait_for.
    env = {
        "TROVE_OPERATOR_IDLE_CHECK_S": "2",
        "TROVE_OPERATOR_RESYNC_S": "20",
        "TROVE_OPERATOR_POOL_CHECK_S": "1",
        **os.environ,
        "KUBECONFIG": kubeconfig,
    }
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                *[sys.executable, "-m", "trove_operator", "--standalone", "-n", namespace, "--liveness", ""],
                *["--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1"],
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )


def current() -> Cluster | None:
    """The test cluster handle if this process has set one up (no side effects)."""
    return _CLUSTER


def cluster() -> Cluster:
    """The process-wide test cluster handle (skips or fails when there is none)."""
    global _CLUSTER, _UNAVAILABLE
    if _UNAVAILABLE is not None:
        skip_or_fail(_UNAVAILABLE)
    if _CLUSTER is not None:
        return _CLUSTER
    try:
        kubeconfig, api = _reachable()
    except pytest.skip.Exception as exc:
        _UNAVAILABLE = str(exc.msg)
        raise
    install_crds(api)
    namespace = f"trove-test-{secrets.token_hex(4)}"
    client.CoreV1Api(api).create_namespace(
        {"metadata": {"name": namespace, "labels": {"trove.dev/test": "1"}}}
    )
    log_path = Path(tempfile.gettempdir()) / f"{namespace}-operator.log"
    metrics_port = free_port()
    operator = start_operator(kubeconfig, namespace, log_path, metrics_port)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    _CLUSTER = Cluster(kubeconfig, namespace, api, operator, log_path, metrics_url)
    atexit.register(_teardown, _CLUSTER)
    return _CLUSTER


def _teardown(handle: Cluster) -> None:
    if handle.operator is not None:
        handle.operator.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            handle.operator.wait(timeout=10)
        if handle.operator.poll() is None:
            handle.operator.kill()
    if os.environ.get("TROVE_TEST_KEEP_CLUSTER_NAMESPACE") == "1":
        return
    release_finalizers(handle.api, handle.namespace)
    with contextlib.suppress(Exception):
        handle.core.delete_namespace(handle.namespace, grace_period_seconds=0)


def release_finalizers(api: client.ApiClient, namespace: str) -> None:
    """Drop kopf's finalizer (its timers need one) from what the stopped operator leaves, so the
    namespace deletion does not hang on them; pods and PVCs go by owner reference."""
    custom = client.CustomObjectsApi(api)
    for plural in ("trovenamespaces", "trovewarmpools"):
        with contextlib.suppress(Exception):
            items = custom.list_namespaced_custom_object("trove.dev", "v1alpha1", namespace, plural)["items"]
            for item in items:
                if item["metadata"].get("finalizers"):
                    custom.patch_namespaced_custom_object(
                        "trove.dev", "v1alpha1", namespace, plural, item["metadata"]["name"],
                        {"metadata": {"finalizers": None}},
                    )  # fmt: skip


async def wait_for_async(
    predicate: Any, timeout: float = 60, interval: float = 0.5, what: str = "condition"
) -> Any:
    """``wait_for`` that lets the loop run meanwhile (a call in flight on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def read_or_none(read: Any, *args: Any) -> Any:
    """``read(*args)`` (a client's ``read_namespaced_*``), or None when the object is absent."""
    try:
        return read(*args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (test helper; the product uses watches)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
