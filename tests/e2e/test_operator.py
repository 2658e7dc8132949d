"""The operator on a real cluster: CR → Ready pod, self-healing, suspend/resume, failures, kubectl."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.cluster import SANDBOX_IMAGE, Cluster, read_or_none, wait_for
from trove_core.crd import GROUP, PLURAL, VERSION, child_names, object_name
from trove_core.template import template_revision


def create_tns(k8s: Cluster, namespace: str | None = None, **spec: Any) -> str:
    namespace = namespace or "e2e-" + secrets.token_hex(4)
    name = object_name("ws-e2e", namespace)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TroveNamespace",
        "metadata": {"name": name},
        "spec": {
            "workspaceId": "ws-e2e",
            "namespace": namespace,
            "image": SANDBOX_IMAGE,
            "imagePullPolicy": "Never",
            "storage": {"size": "64Mi"},
            **spec,
        },
    }
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, body)
    return name


def get_tns(k8s: Cluster, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name)
    return obj


def phase_is(k8s: Cluster, name: str, phase: str) -> dict[str, Any] | None:
    obj = get_tns(k8s, name)
    status = obj.get("status") or {}
    ok = status.get("phase") == phase and status.get("observedGeneration") == obj["metadata"]["generation"]
    return obj if ok else None


def get_pod(k8s: Cluster, name: str) -> Any:
    return read_or_none(k8s.core.read_namespaced_pod, child_names(name).pod, k8s.namespace)


def test_cr_becomes_a_ready_hardened_pod(k8s: Cluster) -> None:
    name = create_tns(k8s, egress="none")
    obj = wait_for(lambda: phase_is(k8s, name, "Ready"), what="phase Ready")
    children = child_names(name)
    (ready,) = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "PodReady")
    assert obj["status"]["pod"] == children.pod
    pod = get_pod(k8s, name)
    assert pod.spec.automount_service_account_token is False
    assert pod.spec.security_context.run_as_non_root is True
    container = pod.spec.containers[0]
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.security_context.allow_privilege_escalation is False
    assert pod.metadata.owner_references[0].name == name
    pvc = k8s.core.read_namespaced_persistent_volume_claim(children.pvc, k8s.namespace)
    assert pvc.status.phase == "Bound"
    policy = k8s.api.sanitize_for_serialization(
        __import__("kubernetes")
        .client.NetworkingV1Api(k8s.api)
        .read_namespaced_network_policy(children.network_policy, k8s.namespace)
    )
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"].get("ingress", []) == []
    assert policy["spec"].get("egress", []) == []


def test_default_internet_egress_is_admitted_and_applied(k8s: Cluster) -> None:
    """The API server accepts the built ipBlock rules (each except inside its cidr), the pod
    states ephemeral storage and its process cap, and runs as a uid of its own."""
    name = create_tns(k8s)
    obj = wait_for(lambda: phase_is(k8s, name, "Ready"), what="phase Ready")
    assert obj["spec"]["egress"] == "internet"
    policy = k8s.api.sanitize_for_serialization(
        k8s.networking.read_namespaced_network_policy(child_names(name).network_policy, k8s.namespace)
    )
    blocks = {
        peer["ipBlock"]["cidr"]: peer["ipBlock"].get("except", [])
        for rule in policy["spec"]["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    }
    assert {"169.254.0.0/16", "10.0.0.0/8", "127.0.0.0/8"} <= set(blocks["0.0.0.0/0"])
    assert "fe80::/10" in blocks["::/0"]
    pod = get_pod(k8s, name)
    [sandbox] = pod.spec.containers
    assert sandbox.resources.limits["ephemeral-storage"] == "1Gi"
    assert {e.name: e.value for e in sandbox.env}["TROVE_MAX_PROCESSES"] == "1024"
    assert pod.spec.security_context.run_as_user >= 1_000_000_000


def test_a_volume_of_the_old_shared_uid_becomes_the_pods_own(k8s: Cluster) -> None:
    """Upgrade path: a volume an older release's pods wrote (all as uid 1000, a private
    directory inside) is handed over, tree and all, to the pod's own uid by its init container."""
    namespace = "e2e-" + secrets.token_hex(4)
    name = object_name("ws-e2e", namespace)
    children = child_names(name)
    pvc = {
        "metadata": {"name": children.pvc},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
    }
    k8s.core.create_namespaced_persistent_volume_claim(k8s.namespace, pvc)
    seed = f"seed-{secrets.token_hex(4)}"
    script = (
        "mkdir -p /workspace/private && echo old > /workspace/private/f && "
        "chown -R 1000:1000 /workspace && chmod 700 /workspace /workspace/private"
    )
    pod = {
        "metadata": {"name": seed},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "seed",
                    "image": SANDBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
                    "volumeMounts": [{"name": "w", "mountPath": "/workspace"}],
                }
            ],
            "volumes": [{"name": "w", "persistentVolumeClaim": {"claimName": children.pvc}}],
        },
    }
    k8s.core.create_namespaced_pod(k8s.namespace, pod)
    wait_for(
        lambda: k8s.core.read_namespaced_pod(seed, k8s.namespace).status.phase == "Succeeded",
        timeout=120,
        what="the seed pod to write as uid 1000",
    )
    k8s.core.delete_namespaced_pod(seed, k8s.namespace, grace_period_seconds=0)
    create_tns(k8s, namespace=namespace)
    wait_for(lambda: phase_is(k8s, name, "Ready"), timeout=120, what="phase Ready")
    assert get_tns(k8s, name)["status"]["pvc"] == children.pvc
    done = subprocess.run(
        ["kubectl", "exec", "-n", k8s.namespace, children.pod, "--", "sh", "-c",
         "cat /workspace/private/f && echo new > /workspace/private/g && stat -c %u /workspace/private/f"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "KUBECONFIG": k8s.kubeconfig},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    old, uid = done.stdout.split()
    assert old == "old"
    assert int(uid) == get_pod(k8s, name).spec.security_context.run_as_user != 1000


def test_deleted_or_failed_pod_is_recreated(k8s: Cluster) -> None:
    name = create_tns(k8s)
    wait_for(lambda: phase_is(k8s, name, "Ready"), what="phase Ready")
    first = get_pod(k8s, name).metadata.uid
    k8s.core.delete_namespaced_pod(child_names(name).pod, k8s.namespace, grace_period_seconds=0)

    def replaced() -> bool:
        pod = get_pod(k8s, name)
        return pod is not None and pod.metadata.uid != first and phase_is(k8s, name, "Ready") is not None

    wait_for(replaced, what="a new Ready pod")


def test_a_deleted_network_policy_comes_back_with_the_resync(k8s: Cluster) -> None:
    # No event reports this drift: only the slow re-sync (20 s here, 300 s by default) repairs it.
    name = create_tns(k8s)
    wait_for(lambda: phase_is(k8s, name, "Ready"), what="phase Ready")
    policy = child_names(name).network_policy
    first = k8s.networking.read_namespaced_network_policy(policy, k8s.namespace).metadata.uid
    k8s.networking.delete_namespaced_network_policy(policy, k8s.namespace)

    def recreated() -> bool:
        live = read_or_none(k8s.networking.read_namespaced_network_policy, policy, k8s.namespace)
        return live is not None and bool(live.metadata.uid != first)

    wait_for(recreated, timeout=90, interval=1, what="the NetworkPolicy re-created by the re-sync")


def test_egress_blocked_ranges_reach_the_network_policy(k8s: Cluster) -> None:
    """E2B's update_network: spec.egressBlocked is admitted by the schema, rendered into the
    policy's excepts (the API server accepts them), and both families blocked leave no egress."""
    name = create_tns(k8s, egressBlocked=["203.0.113.0/24", "2001:db8::/32"])
    policy_name = child_names(name).network_policy

    def blocks() -> dict[str, list[str]]:
        policy = k8s.api.sanitize_for_serialization(
            k8s.networking.read_namespaced_network_policy(policy_name, k8s.namespace)
        )
        return {
            peer["ipBlock"]["cidr"]: peer["ipBlock"].get("except", [])
            for rule in policy["spec"].get("egress") or []
            for peer in rule.get("to", [])
            if "ipBlock" in peer
        }

    def has_policy() -> bool:
        try:
            blocks()
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(has_policy, what="the NetworkPolicy")
    assert "203.0.113.0/24" in blocks()["0.0.0.0/0"]
    assert "2001:db8::/32" in blocks()["::/0"]
    k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, k8s.namespace, PLURAL, name, {"spec": {"egressBlocked": ["0.0.0.0/0", "::/0"]}}
    )
    wait_for(lambda: blocks() == {}, what="a NetworkPolicy without egress")
    k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, k8s.namespace, PLURAL, name, {"spec": {"egressBlocked": []}}
    )
    wait_for(lambda: "203.0.113.0/24" not in blocks().get("0.0.0.0/0", ["203.0.113.0/24"]), what="cleared")

    def resolver_open() -> bool:
        policy = k8s.api.sanitize_for_serialization(
            k8s.networking.read_namespaced_network_policy(policy_name, k8s.namespace)
        )
        rules = policy["spec"].get("egress") or []
        return any("podSelector" in peer for rule in rules for peer in rule.get("to", []))

    # E2B's allow-list (deny-all with a hole): the hole stays open, the cluster resolver does not.
    assert resolver_open()
    k8s.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        k8s.namespace,
        PLURAL,
        name,
        {"spec": {"egressBlocked": ["0.0.0.0/1", "128.0.0.0/2", "::/0"], "egressDns": False}},
    )
    wait_for(lambda: "0.0.0.0/0" in blocks() and not resolver_open(), what="an allow-list without DNS")
    k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, k8s.namespace, PLURAL, name, {"spec": {"egressBlocked": [], "egressDns": True}}
    )
    wait_for(resolver_open, what="DNS back")
    with pytest.raises(ApiException):
        create_tns(k8s, egressBlocked=["x" * 65])  # longer than any CIDR: refused by the schema


def test_suspend_deletes_the_pod_and_keeps_the_pvc(k8s: Cluster) -> None:
    name = create_tns(k8s)
    wait_for(lambda: phase_is(k8s, name, "Ready"), what="phase Ready")
    k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, k8s.namespace, PLURAL, name, {"spec": {"suspended": True}}
    )
    wait_for(lambda: phase_is(k8s, name, "Suspended") and get_pod(k8s, name) is None, what="suspended")
    k8s.core.read_namespaced_persistent_volume_claim(child_names(name).pvc, k8s.namespace)
    k8s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, k8s.namespace, PLURAL, name, {"spec": {"suspended": False}}
    )
    wait_for(lambda: phase_is(k8s, name, "Ready"), what="phase Ready again")


def test_bad_image_fails_with_an_event(k8s: Cluster) -> None:
    name = create_tns(k8s, image="trove-does-not-exist:0")
    obj = wait_for(lambda: phase_is(k8s, name, "Failed"), what="phase Failed")
    (ready,) = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "ErrImageNeverPull"

    def warned() -> bool:
        events = k8s.core.list_namespaced_event(
            k8s.namespace, field_selector=f"involvedObject.name={name},type=Warning"
        )
        return any(e.reason == "ErrImageNeverPull" for e in events.items)

    wait_for(warned, what="a Warning event on the TroveNamespace")


def test_invalid_spec_is_refused_by_the_schema(k8s: Cluster) -> None:
    with pytest.raises(ApiException) as caught:
        create_tns(k8s, egress="sometimes")
    assert caught.value.status == 422


def test_deletion_removes_children_by_policy(k8s: Cluster) -> None:
    doomed = create_tns(k8s)
    kept = create_tns(k8s, deletionPolicy="Retain")
    for name in (doomed, kept):
        wait_for(lambda n=name: phase_is(k8s, n, "Ready"), what="phase Ready")
        k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name)

    def pvc_gone(name: str) -> bool:
        try:
            pvc = k8s.core.read_namespaced_persistent_volume_claim(child_names(name).pvc, k8s.namespace)
        except ApiException as exc:
            return exc.status == 404
        return pvc.metadata.deletion_timestamp is not None

    wait_for(lambda: pvc_gone(doomed) and get_pod(k8s, doomed) is None, what="children of a deleted CR")
    assert not pvc_gone(kept)
    k8s.core.delete_namespaced_persistent_volume_claim(child_names(kept).pvc, k8s.namespace)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_get_tns_shows_the_table(k8s: Cluster) -> None:
    name = create_tns(k8s)
    wait_for(lambda: phase_is(k8s, name, "Ready"), what="phase Ready")
    env = {**os.environ, "KUBECONFIG": k8s.kubeconfig}
    for resource in ("tns", "trovenamespaces"):
        out = subprocess.run(
            ["kubectl", "get", resource, name, "-n", k8s.namespace],
            capture_output=True, text=True, check=True, env=env,
        ).stdout  # fmt: skip
        header, row = out.splitlines()[:2]
        assert header.split() == ["NAME", "NAMESPACE", "PHASE", "POD", "REVISION", "DESIRED", "AGE"]
        spec = get_tns(k8s, name)["spec"]
        revision = template_revision(spec)  # current: the pod runs the template it asks for
        expected = [name, spec["namespace"], "Ready", child_names(name).pod, revision, revision]
        assert row.split()[:6] == expected
