"""The Helm chart on a real cluster: install, the seed snippets through the API Service, upgrade, uninstall.

One release (tests/support/helm_release.py) for the module, with the locally built images and
snapshots on a real S3 process reachable from the pods. The seed 000/001 tests of
tests/contract/test_seed_snippets.py are imported and run unchanged: the ``server`` fixture below
points them at the release's Service with the chart's admin key and a workspace key minted with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
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
from tests.support.cluster import wait_for
from tests.support.helm_release import (
    CRD,
    POOL_CRD,
    RELEASE,
    Release,
    admin_key_from_secret,
    installed,
    kubectl,
    leftovers,
    run,
    upgrade,
)
from tests.support.sdk import client


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    with installed(tmp_path_factory.mktemp("helm")) as rel:
        yield rel


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


def test_the_chart_warm_pool_fills_and_serves_new_namespaces(release: Release) -> None:
    """The chart's TroveWarmPool (sandbox.warmPool.size, 2 by default) matches the API's
    namespaces: a brand-new namespace's first call lands on a pod that was waiting."""

    def pool() -> dict[str, object]:
        found = json.loads(kubectl("get", "trovewarmpools", "-n", release.sandboxes, "-o", "json").stdout)[
            "items"
        ]
        assert len(found) == 1
        return dict(found[0].get("status") or {})

    def ready_members() -> set[str]:
        pods = json.loads(
            kubectl("get", "pods", "-n", release.sandboxes, "-l", "trove.dev/pool", "-o", "json").stdout
        )["items"]
        return {
            f"pod/{pod['metadata']['name']}"
            for pod in pods
            if not pod["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (pod.get("status") or {}).get("conditions") or []
            )
        }

    # The pods themselves: the pool's status is refreshed every few seconds, so right after the
    # seed tests' namespaces took members it may still count them.
    wait_for(
        lambda: len(ready_members()) == 2 and pool().get("ready") == 2,
        timeout=180,
        what="2 ready members in the chart's pool",
    )
    waiting = ready_members()
    with client(release, "from-the-pool") as agent:  # type: ignore[arg-type]
        assert agent.exec("echo warm") == "warm\n"
    namespaces = json.loads(kubectl("get", "tns", "-n", release.sandboxes, "-o", "json").stdout)["items"]
    (mine,) = [n for n in namespaces if n["spec"]["namespace"] == "from-the-pool"]
    assert f"pod/{mine['status']['pod']}" in waiting


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
    # api.logLevel changes the pod template, so the API pod is replaced
    upgrade(release, *release.values, "--set-string", "api.logLevel=debug", timeout_s=180)
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


# ── isolation on the real cluster (issue 14, items 3 and 4) ──────────────────


def can_i(release: Release, account: str, verb: str, resource: str, *where: str) -> bool:
    """``kubectl auth can-i`` as one of the release's ServiceAccounts (the API server decides)."""
    subject = f"system:serviceaccount:{release.namespace}:{RELEASE}-{account}"
    # `pods/exec` on kubectl's command line names a pod called "exec": pass the subresource apart.
    kind, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    done = kubectl("auth", "can-i", verb, kind, *extra, f"--as={subject}", *where, check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


def test_the_api_and_operator_reach_sandbox_pods_only(release: Release) -> None:
    home, sandboxes = ["-n", release.namespace], ["-n", release.sandboxes]
    assert can_i(release, "api", "create", "pods/exec", *sandboxes)
    assert can_i(release, "api", "get", "pods/exec", *sandboxes)
    assert can_i(release, "operator", "create", "pods", *sandboxes)
    assert can_i(release, "operator", "delete", "pods", *sandboxes)
    # Never the API, operator or MinIO pods, nor any Secret, here or cluster-wide.
    for account in ("api", "operator"):
        for verb, resource in (("create", "pods/exec"), ("get", "pods/exec"), ("create", "pods")):
            assert not can_i(release, account, verb, resource, *home), (account, verb, resource)
            assert not can_i(release, account, verb, resource, "-n", "kube-system"), (account, verb)
        assert not can_i(release, account, "delete", "pods", *home)
        for where in (home, sandboxes, ["--all-namespaces"]):
            assert not can_i(release, account, "get", "secrets", *where), (account, where)
            assert not can_i(release, account, "list", "secrets", *where), (account, where)
    pods = json.loads(kubectl("get", "pods", "-n", release.namespace, "-o", "json").stdout)["items"]
    assert not [p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/name") == "trove-sandbox"]


# Fork up to 2000 sleepers; report how many started before the kernel said EAGAIN, and keep
# them alive a while so other namespaces are tried while this one sits at its cap.
FORK_BOMB = """python3 - <<'PY'
import os, time
started = 0
try:
    for _ in range(2000):
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", "30"])
        started += 1
except BlockingIOError:
    print("EAGAIN after", started, flush=True)
else:
    print("no limit:", started, flush=True)
time.sleep(4)
PY"""


def test_a_fork_bomb_hits_the_cap_and_other_namespaces_keep_working(release: Release) -> None:
    with client(release, "bomb") as bomb, client(release, "bystander") as bystander:  # type: ignore[arg-type]
        uids = {int(bomb.exec("id -u")), int(bystander.exec("id -u"))}
        assert len(uids) == 2, "two sandboxes share a uid, and so one process cap"
        assert min(uids) >= 1_000_000_000
        with ThreadPoolExecutor(1) as pool:
            bombing = pool.submit(bomb.exec, FORK_BOMB)
            time.sleep(2)  # let the bomb reach its cap (not an assertion on speed)
            assert bystander.exec("sh -c 'echo still here'") == "still here\n"
            out = bombing.result()
        words = out.split()
        assert words[:2] == ["EAGAIN", "after"], out
        assert 0 < int(words[2]) < 256
        # The bomb's sleepers went with its exec: the same sandbox forks again.
        assert bomb.exec("for i in 1 2 3; do sleep 0 & done; wait; echo ok") == "ok\n"


def test_uninstall_leaves_only_the_crd(release: Release) -> None:
    ns = release.namespace
    assert json.loads(kubectl("get", "trovenamespaces", "-n", release.sandboxes, "-o", "json").stdout)[
        "items"
    ]
    run("helm", "uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "180s")
    release.uninstalled = True
    try:
        wait_for(
            lambda: not leftovers(ns, {"secret/e2e-s3"}), timeout=120, what="the release's objects to go"
        )
    except AssertionError:
        raise AssertionError(f"left behind in {ns}: {leftovers(ns, {'secret/e2e-s3'})}") from None
    cluster_wide = kubectl(
        "get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    ).stdout.split()
    assert [n for n in cluster_wide if ns in n] == []
    # The chart made the sandbox namespace; uninstall takes it (and every sandbox PVC) away.
    wait_for(
        lambda: kubectl("get", "namespace", release.sandboxes, check=False).returncode != 0,
        timeout=120,
        what=f"namespace {release.sandboxes} to go",
    )
    # Helm keeps CRDs by design (the README says how to remove them).
    assert kubectl("get", "crd", CRD, check=False).returncode == 0
    assert kubectl("get", "crd", POOL_CRD, check=False).returncode == 0
