"""Zero-downtime by default (issue 16, item 2): the chart's defaults survive `helm upgrade` and an
API pod deletion with no failed call from a client looping exec and uploads.

Defaults: the chart's PostgreSQL (the trove-postgres image `make images` built), two API replicas
rolled one at a time (maxUnavailable 0), a PodDisruptionBudget, and each stopping API pod
draining (TROVE_SHUTDOWN_DRAIN_S: /readyz 503, connections closed after each response) before
uvicorn's graceful stop lets in-flight calls finish. The client is the official SDK over the
API Service, as a user's would be; it does not retry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from tests.support.cluster import wait_for
from tests.support.helm_release import Release, installed, kubectl, upgrade
from tests.support.sdk import admin, client


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    with installed(tmp_path_factory.mktemp("helm")) as rel:
        yield rel


def ready_api_pods(release: Release) -> set[str]:
    out = kubectl(
        "get", "pods", "-n", release.namespace, "-l", "app.kubernetes.io/component=api", "-o", "json"
    )
    return {
        pod["metadata"]["name"]
        for pod in json.loads(out.stdout)["items"]
        if not pod["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    }


class LoopingClient:
    """exec + upload in a loop on one SDK client (keep-alive, as agents run), every outcome kept."""

    def __init__(self, release: Release, api_key: str) -> None:
        self.release, self.api_key = release, api_key
        self.calls = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="looping-client")

    def run(self) -> None:
        with client(self.release, "under-load", self.api_key) as sdk:  # type: ignore[arg-type]
            n = 0
            while not self.stop.is_set():
                n += 1
                for name, call in (
                    ("exec", lambda n=n: sdk.exec(f"echo {n} > workspace/n.txt && cat workspace/n.txt")),
                    ("upload", lambda n=n: sdk.upload(f"workspace/up-{n % 5}.bin", bytes([n % 256]) * 4096)),
                ):
                    try:
                        result = call()
                        if name == "exec" and result != f"{n}\n":
                            self.failures.append(f"exec {n}: {result!r}")
                    except Exception as exc:  # every failure counts, whatever its type
                        self.failures.append(f"{name} {n}: {type(exc).__name__}: {exc}")
                    self.calls += 1

    def __enter__(self) -> LoopingClient:
        self.thread.start()
        wait_for(lambda: self.calls >= 10, timeout=120, what="the looping client's first calls")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


def test_defaults_are_postgresql_two_replicas_and_a_pdb(release: Release) -> None:
    deployments = json.loads(kubectl("get", "deployments", "-n", release.namespace, "-o", "json").stdout)
    by_component = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in deployments["items"]}
    assert {"api", "operator", "postgresql"} <= set(by_component)
    api = by_component["api"]
    assert api["spec"]["replicas"] == 2
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert len(ready_api_pods(release)) == 2
    pdb = json.loads(kubectl("get", "pdb", "-n", release.namespace, "-o", "json").stdout)["items"]
    assert [p["spec"]["maxUnavailable"] for p in pdb] == [1]


def test_waiting_sandboxes_run_below_namespace_pods(release: Release) -> None:
    """The pool's PriorityClass reaches its members (the scheduler may preempt them), while a
    namespace's own pod keeps the default priority."""

    def priorities(selector: str) -> set[int]:
        out = kubectl("get", "pods", "-n", release.sandboxes, "-l", selector, "-o", "json").stdout
        return {pod["spec"].get("priority", 0) for pod in json.loads(out)["items"]}

    wait_for(lambda: len(priorities("trove.dev/pool")) > 0, timeout=180, what="warm pool members")
    assert priorities("trove.dev/pool") == {-100}
    with admin(release) as adm:  # type: ignore[arg-type]
        key = adm.create_key("own-pod", namespace="own-pod").api_key
    with client(release, "own-pod", key) as sdk:  # type: ignore[arg-type]
        assert sdk.exec("echo up") == "up\n"


def test_upgrade_and_pod_deletion_under_load_fail_no_call(release: Release) -> None:
    with admin(release) as adm:  # type: ignore[arg-type]
        key = adm.create_key("under-load", namespace="under-load").api_key
    before = ready_api_pods(release)
    with LoopingClient(release, key) as loop:
        # api.logLevel: a pod-template change, so every API pod is replaced
        upgrade(release, *release.values, "--set-string", "api.logLevel=debug")
        wait_for(
            lambda: len(ready_api_pods(release)) == 2 and not ready_api_pods(release) & before,
            timeout=180,
            what="both API pods replaced",
        )
        upgraded_calls = loop.calls
        victim = sorted(ready_api_pods(release))[0]
        kubectl("delete", "pod", "-n", release.namespace, victim, "--wait=true")
        wait_for(
            lambda: len(ready_api_pods(release)) == 2 and victim not in ready_api_pods(release),
            timeout=180,
            what="the deleted API pod's replacement",
        )
        wait_for(lambda: loop.calls >= upgraded_calls + 20, timeout=120, what="calls after the deletion")
    assert loop.failures == [], f"{len(loop.failures)} of {loop.calls} calls failed: {loop.failures[:10]}"
    assert loop.calls > upgraded_calls > 10


def test_a_service_change_restarts_no_api_pod(release: Release) -> None:
    before = ready_api_pods(release)
    upgrade(
        release,
        *release.values,
        "--set-string",
        "api.logLevel=debug",
        "--set-string",
        "api.service.type=NodePort",
        timeout_s=120,
    )
    assert ready_api_pods(release) == before
