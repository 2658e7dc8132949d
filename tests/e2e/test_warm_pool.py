"""The warm pool on a real cluster: members wait Ready, a fitting namespace takes one over, the
pool refills, a different template starts its own pod, and the API's first call lands on a
claimed pod.

Each test's pool uses a storage size no other e2e test asks for, so namespaces made by other
tests in the shared test namespace never fit it; the pool is deleted at the end (its waiting
members go with it by owner reference).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.e2e.test_operator import create_tns, get_tns, phase_is
from tests.support.cluster import SANDBOX_IMAGE, Cluster, read_or_none, wait_for
from tests.support.sdk import client
from tests.support.server import make_data_dir, start_server
from trove_api.runtimes.kubernetes import pool_channels
from trove_api.runtimes.kubernetes.runtime import KubernetesRuntime
from trove_core.crd import GROUP, LABEL_NAMESPACE, LABEL_POOL, POOL_PLURAL, VERSION, child_names, object_name
from trove_core.runtime import ExecSpec, NamespaceRef
from trove_core.settings import Settings

POOL_STORAGE = "48Mi"


def pool_members(k8s: Cluster, pool: str) -> list[Any]:
    pods = k8s.core.list_namespaced_pod(k8s.namespace, label_selector=f"{LABEL_POOL}={pool}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def pool_status(k8s: Cluster, pool: str) -> dict[str, Any]:
    obj = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, k8s.namespace, POOL_PLURAL, pool)
    return dict(obj.get("status") or {})


def create_pool(k8s: Cluster, name: str, size: int, template: dict[str, Any], **spec: Any) -> None:
    """A TroveWarmPool of ``size`` members built from ``template`` (``spec``: its other fields)."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TroveWarmPool",
        "metadata": {"name": name},
        "spec": {"size": size, **spec, "template": template},
    }
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, k8s.namespace, POOL_PLURAL, body)


def full(k8s: Cluster, pool: str, size: int) -> bool:
    status = pool_status(k8s, pool)
    return status.get("warm") == size and status.get("ready") == size and len(pool_members(k8s, pool)) == size


@pytest.fixture
def make_pool(k8s: Cluster) -> Iterator[Any]:
    made: list[str] = []

    def make(size: int, **template: Any) -> str:
        name = "pool-" + secrets.token_hex(3)
        create_pool(k8s, name, size, {"image": SANDBOX_IMAGE, "imagePullPolicy": "Never", **template})
        made.append(name)
        wait_for(lambda: full(k8s, name, size), timeout=120, what=f"{size} ready members in {name}")
        return name

    yield make
    for name in made:
        k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, POOL_PLURAL, name)
    for name in made:
        wait_for(lambda n=name: not pool_members(k8s, n), what="waiting members garbage-collected")


def test_a_fitting_namespace_claims_a_waiting_sandbox_and_the_pool_refills(
    k8s: Cluster, make_pool: Any
) -> None:
    pool = make_pool(2, storage={"size": POOL_STORAGE})
    waiting = {p.metadata.name: p for p in pool_members(k8s, pool)}

    name = create_tns(k8s, storage={"size": POOL_STORAGE})
    obj = wait_for(lambda: phase_is(k8s, name, "Ready"), what="phase Ready")
    claimed = obj["status"]["pod"]
    assert claimed in waiting
    pod = k8s.core.read_namespaced_pod(claimed, k8s.namespace)
    assert pod.metadata.uid == waiting[claimed].metadata.uid  # taken over, not restarted
    assert pod.metadata.labels[LABEL_NAMESPACE] == name
    assert LABEL_POOL not in pod.metadata.labels
    assert [o.name for o in pod.metadata.owner_references] == [name]
    pvc = k8s.core.read_namespaced_persistent_volume_claim(obj["status"]["pvc"], k8s.namespace)
    assert [o.name for o in pvc.metadata.owner_references] == [name]
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == pvc.metadata.name
    # The namespace's own NetworkPolicy now selects the pod; the pool's no longer does.
    assert pod.metadata.labels["trove.dev/component"] == "sandbox"

    wait_for(lambda: full(k8s, pool, 2), what="the pool back at 2 ready")
    assert claimed not in {p.metadata.name for p in pool_members(k8s, pool)}

    # Suspend and resume keep the claimed PVC (so its files): the pod comes back on it.
    k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, k8s.namespace, "trovenamespaces", name, {"spec": {"suspended": True}}
    )
    wait_for(
        lambda: phase_is(k8s, name, "Suspended") and get_pod_or_none(k8s, claimed) is None, what="suspended"
    )
    k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, k8s.namespace, "trovenamespaces", name, {"spec": {"suspended": False}}
    )
    again = wait_for(lambda: phase_is(k8s, name, "Ready"), what="Ready again")
    resumed = k8s.core.read_namespaced_pod(again["status"]["pod"], k8s.namespace)
    assert resumed.spec.volumes[0].persistent_volume_claim.claim_name == pvc.metadata.name

    # Deleting the namespace removes the claimed pair (it was re-owned), not the pool's others.
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, "trovenamespaces", name)

    def pvc_gone() -> bool:
        try:
            live = k8s.core.read_namespaced_persistent_volume_claim(pvc.metadata.name, k8s.namespace)
        except ApiException as exc:
            return exc.status == 404
        return live.metadata.deletion_timestamp is not None

    wait_for(pvc_gone, what="the claimed PVC deleted with its namespace")
    assert full(k8s, pool, 2)


def test_a_namespace_with_another_template_starts_its_own_pod(k8s: Cluster, make_pool: Any) -> None:
    pool = make_pool(1, storage={"size": POOL_STORAGE})
    name = create_tns(k8s, storage={"size": "40Mi"})
    obj = wait_for(lambda: phase_is(k8s, name, "Ready"), what="phase Ready")
    assert obj["status"]["pod"] == child_names(name).pod
    assert get_tns(k8s, name)["metadata"]["annotations"]["trove.dev/pvc-name"] == child_names(name).pvc
    assert len(pool_members(k8s, pool)) == 1


def test_the_api_first_call_lands_on_a_claimed_pod(k8s: Cluster, make_pool: Any) -> None:
    overrides = k8s.settings_overrides() | {"k8s_storage_size": POOL_STORAGE}
    resources = {
        "requests": {"cpu": overrides["k8s_cpu_request"], "memory": overrides["k8s_memory_request"]},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    pool = make_pool(1, storage={"size": POOL_STORAGE}, resources=resources)
    (member,) = [p.metadata.name for p in pool_members(k8s, pool)]
    with start_server(**overrides) as live:
        namespace = "wp-" + secrets.token_hex(4)
        with client(live, namespace) as trove:
            trove.write("hello.txt", "warm")
            uid = k8s.core.read_namespaced_pod(member, k8s.namespace).spec.security_context.run_as_user
            assert trove.exec("cat /workspace/hello.txt; id -u") == f"warm{uid}\n"
            assert uid >= 1_000_000_000  # the member's own uid, kept by the claim
        obj = get_tns(k8s, object_name(live.workspace_id, namespace))
    assert obj["status"]["pod"] == member


def get_pod_or_none(k8s: Cluster, name: str) -> Any:
    return read_or_none(k8s.core.read_namespaced_pod, name, k8s.namespace)


def test_pools_are_deleted_at_once_even_while_their_timer_runs(k8s: Cluster) -> None:
    # kopf removes its finalizer only once the object's timers have exited; a sync timer caught
    # mid-run used to be checked again after kopf's default 60 s, so a deletion hung that long.
    # Forty empty pools (their timers run every second here) make such a collision likely: on
    # the old setting this test failed about one run in three.
    names = [f"gone-{secrets.token_hex(3)}" for _ in range(40)]
    for name in names:
        create_pool(k8s, name, 0, {"image": SANDBOX_IMAGE, "storage": {"size": POOL_STORAGE}})
    for name in names:
        wait_for(lambda n=name: "size" in pool_status(k8s, n), what=f"{name} handled")
    for name in names:
        k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, POOL_PLURAL, name)

    def left() -> list[str]:
        items = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, k8s.namespace, POOL_PLURAL)["items"]
        return [i["metadata"]["name"] for i in items if i["metadata"]["name"] in names]

    wait_for(lambda: not left(), timeout=20, what="the deleted pools gone")


async def _until(predicate: Any, what: str, timeout: float = 60) -> Any:
    for _ in range(int(timeout / 0.1)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_first_call_takes_the_channel_opened_while_the_pod_waited(
    k8s: Cluster, make_pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = k8s.settings_overrides() | {"k8s_storage_size": POOL_STORAGE}
    resources = {
        "requests": {"cpu": overrides["k8s_cpu_request"], "memory": overrides["k8s_memory_request"]},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    # One channel ahead for two members: it must be the member the operator claims first.
    settings = Settings(data_dir=make_data_dir(), **overrides, k8s_pool_channels=1)
    runtime = KubernetesRuntime.from_settings(settings)
    runtime.start_background()
    try:
        pool = make_pool(2, storage={"size": POOL_STORAGE}, resources=resources)
        members = {p.metadata.name for p in pool_members(k8s, pool)}
        opened = runtime.pool_channels._ready
        await _until(lambda: set(opened) & members, "a channel to a waiting member")
        ahead = dict(opened)
        assert len(ahead) == 1
        ns = NamespaceRef("ws_pool_" + secrets.token_hex(4), "first")
        await runtime.provision(ns)
        out = await runtime.exec(ns, ExecSpec(script="id -u", stdin=None, timeout_s=30, output_limit=4096))
        claimed = get_tns(k8s, ns.object_name)["status"]["pod"]
        assert claimed in members
        # The first call used the agent started before the claim: no exec session of its own.
        assert runtime._channels[ns.object_name] is ahead[claimed]
        uid = k8s.core.read_namespaced_pod(claimed, k8s.namespace).spec.security_context.run_as_user
        assert out.stdout.decode().strip() == str(uid)

        # A member claimed through another replica (no channels ahead there): this replica's
        # channel to it is closed once it has had its grace to be taken.
        monkeypatch.setattr(pool_channels, "TAKE_GRACE_S", 0.0)
        (second,) = members - {claimed}
        await _until(lambda: second in opened, "the channel moved to the next member in claim order")
        ahead = dict(opened)
        replica = KubernetesRuntime.from_settings(
            Settings(data_dir=make_data_dir(), **overrides, k8s_pool_channels=0)
        )
        other = NamespaceRef(ns.workspace_id, "other")
        try:
            await replica.provision(other)
            await replica.exec(other, ExecSpec(script="true", stdin=None, timeout_s=30, output_limit=4096))
        finally:
            await replica.aclose()
        taken = get_tns(k8s, other.object_name)["status"]["pod"]
        assert taken == second
        await _until(lambda: taken in runtime.pool_channels._left, "the claim seen by this replica")
        await runtime.pool_channels.expire()
        assert taken not in opened
        assert not ahead[taken].open
        await runtime.deprovision(ns)
    finally:
        await runtime.aclose()
