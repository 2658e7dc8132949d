"""Zero-downtime upgrades by default (issue 16, item 2), via `helm template`.

The chart's PostgreSQL, two API replicas rolling one at a time, the drain before the graceful
stop, and a settings checksum that restarts the API only for Secrets rendered from values. On a
cluster, under load: tests/e2e/test_helm_upgrade_load.py; the drain itself:
tests/contract/test_shutdown_drain.py.
"""

from __future__ import annotations

import base64

import pytest

from tests.support.helm import CHART, env_of, find, kinds, render


def checksum(*args: str) -> str:
    api = find(render(*args), "Deployment", "-api")
    return str(api["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"])


@pytest.mark.parametrize(
    "change",
    [
        "api.service.type=NodePort",
        "api.service.port=8081",
        "api.ingress.enabled=true",
        "api.podDisruptionBudget.maxUnavailable=2",
        "sandbox.warmPool.size=5",
        "minio.persistence.size=20Gi",
    ],
)
def test_changes_that_need_no_restart_leave_the_checksum(change: str) -> None:
    assert checksum("--set", change) == checksum()


@pytest.mark.parametrize(
    "change",
    [
        "api.adminKey.value=trove-sk-admin-" + "a" * 43,
        "snapshots.s3.accessKeyId=AKIDEXAMPLE",
        "snapshots.s3.secretAccessKey=wJalrXUtnFEMI",
    ],
)
def test_secrets_rendered_from_values_change_the_checksum(change: str) -> None:
    assert checksum("--set", change) != checksum()


def test_the_chart_postgresql_is_the_default_database() -> None:
    docs = render()
    postgres = find(docs, "Deployment", "-postgresql")
    spec = postgres["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["image"] == "trove-postgres:0.1.0"
    assert postgres["spec"]["strategy"] == {"type": "Recreate"}
    assert spec["securityContext"]["runAsUser"] == 999
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert [
        v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
    ] == ["t-trove-postgresql"]
    assert [c["name"] for c in spec["initContainers"]] == ["volume-permissions"]
    password = base64.b64decode(find(docs, "Secret", "-postgresql")["data"]["password"]).decode()
    assert len(password) == 32
    assert password.isalnum()  # safe inside the database URL without quoting
    policy = find(docs, "NetworkPolicy", "-postgresql")
    [rule] = policy["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    assert find(docs, "Service", "-postgresql")["spec"]["ports"][0]["port"] == 5432


def test_two_replicas_roll_one_at_a_time_with_a_pdb() -> None:
    docs = render()
    api = find(docs, "Deployment", "-api")
    assert api["spec"]["replicas"] == 2
    assert api["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    assert not [d for d in docs if d["metadata"]["name"] == "t-trove-api-data"]


def test_sqlite_keeps_one_replica_and_recreate() -> None:
    for docs in (
        render("--set", "postgresql.enabled=false", "--set", "api.replicas=1"),
        render("-f", str(CHART / "values-bare.yaml")),
    ):
        api = find(docs, "Deployment", "-api")
        assert api["spec"]["replicas"] == 1
        assert api["spec"]["strategy"] == {"type": "Recreate"}
        assert "Deployment" in kinds(docs)
        assert not [d for d in docs if d["metadata"]["name"].endswith("-postgresql")]


def test_sandboxes_request_little_burst_to_their_limit_and_suspend_within_minutes() -> None:
    """Issue 16, item 1 (density): an idle sandbox costs its PVC after minutes, not an hour, and
    a warm one reserves 10m of CPU while its limit still lets an active one use a whole core."""
    docs = render()
    env = env_of(find(docs, "Deployment", "-api"))
    assert env["TROVE_K8S_CPU_REQUEST"] == "10m"
    assert env["TROVE_K8S_MEMORY_REQUEST"] == "32Mi"
    assert env["TROVE_K8S_CPU_LIMIT"] == "1"
    assert int(env["TROVE_K8S_IDLE_SUSPEND_S"]) <= 600
    pool = find(docs, "TroveWarmPool")["spec"]["template"]["resources"]
    assert pool["requests"]["cpu"] == "10m"
    assert pool["limits"]["cpu"] == "1"


def test_the_warm_pool_yields_through_a_priority_class_below_every_pod() -> None:
    docs = render()
    [priority] = [d for d in docs if d["kind"] == "PriorityClass"]
    assert priority["value"] < 0
    assert priority["preemptionPolicy"] == "Never"
    assert priority["globalDefault"] is False
    assert priority["metadata"]["name"] == "trove-t-trove-warm-pool"  # release namespace in it
    assert find(docs, "TroveWarmPool")["spec"]["priorityClassName"] == priority["metadata"]["name"]
    off = render("--set", "sandbox.warmPool.yield=false")
    assert "PriorityClass" not in kinds(off)
    assert "priorityClassName" not in find(off, "TroveWarmPool")["spec"]
    assert "PriorityClass" not in kinds(render("--set", "sandbox.warmPool.size=0"))
