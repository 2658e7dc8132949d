"""The chart's scale-out branch on a real cluster: 2 API replicas on an external PostgreSQL, then uninstall.

PostgreSQL runs on the host (tests/support/postgres.py) and also listens on the CNI gateway, so
the pods reach it by IP (no DNS); its URL comes from an existing Secret, as a user would give it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest

from tests.support.cluster import sandbox_host, wait_for
from tests.support.helm_release import RELEASE, Release, installed, kubectl, leftovers, run
from tests.support.postgres import start_postgres
from tests.support.sdk import admin, client


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    host = sandbox_host()
    pods = str(ipaddress.ip_network(f"{host}/16", strict=False))
    with start_postgres(also_listen=host, client_cidr=pods) as postgres:
        url = postgres.create_database().replace("@127.0.0.1:", f"@{host}:")
        extra = {
            "api": {"replicas": 2},
            "postgresql": {"enabled": False},  # the external one instead of the chart's
            "database": {
                "external": {"enabled": True, "existingSecret": "e2e-db", "existingSecretKey": "url"}
            },
        }
        with installed(tmp_path_factory.mktemp("helm"), extra, {"e2e-db": {"url": url}}) as rel:
            yield rel


def api_pods(release: Release) -> list[str]:
    out = kubectl(
        "get", "pods", "-n", release.namespace, "-l", "app.kubernetes.io/component=api", "-o", "json"
    )
    return [
        pod["metadata"]["name"]
        for pod in json.loads(out.stdout)["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    ]


def test_two_replicas_share_one_database(release: Release) -> None:
    assert len(api_pods(release)) == 2
    with admin(release) as adm:  # type: ignore[arg-type]
        key = adm.create_key("replicas", namespace="spread")
    with client(release, "spread", key.api_key) as agent:  # type: ignore[arg-type]
        agent.write("workspace/shared.txt", "one database\n")
        assert agent.exec("cat workspace/shared.txt") == "one database\n"
    # The Service picks a replica per connection (a client keeps one): sixteen fresh clients
    # leave a replica without a read once in 2^15 runs. Every read must see the same key and file.
    for _ in range(16):
        with client(release, "spread", key.api_key) as reader:  # type: ignore[arg-type]
            assert reader.read_text("workspace/shared.txt") == "one database\n"
    for pod in api_pods(release):
        log = kubectl("logs", "-n", release.namespace, pod).stdout
        assert "/v1/files/content" in log, f"{pod} served no read"
    with admin(release) as adm:  # type: ignore[arg-type]
        assert key.key_id in {k.key_id for k in adm.list_keys()}


def test_uninstall_leaves_only_the_crd(release: Release) -> None:
    ns = release.namespace
    run("helm", "uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "180s")
    release.uninstalled = True
    ignore = {"secret/e2e-s3", "secret/e2e-db"}
    try:
        wait_for(lambda: not leftovers(ns, ignore), timeout=120, what="the release's objects to go")
    except AssertionError:
        raise AssertionError(f"left behind in {ns}: {leftovers(ns, ignore)}") from None
