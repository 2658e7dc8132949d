"""Hostile checks of the Kubernetes isolation the chart and operator build (issue 14, items 2-4, 6).

Our test cluster does not enforce NetworkPolicy, so the egress rules are evaluated here, with the
ipaddress module, against the addresses a sandbox must not reach. RBAC is read off the rendered
Roles and bindings: what each ServiceAccount may do, in which namespace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.helm import Doc, env_of, find, render
from trove_api.runtimes.kubernetes.namespaces import build_tns
from trove_core.crd import ChildNames, child_names
from trove_core.runtime import NamespaceRef
from trove_core.settings import Settings
from trove_operator import builders, pool_builders, reconciler
from trove_operator.settings import OperatorSettings
from trove_operator.spec import SandboxTemplate, TroveNamespaceSpec

SANDBOXES = "t-sandboxes"
NAME = "alice-0123456789ab"

# ── egress: evaluate the rules ───────────────────────────────────────────────


def reachable(policy: Doc, address: str, port: int = 443, protocol: str = "TCP") -> bool:
    """Would this policy let a selected pod open ``address:port``? ipBlock peers only: pod and
    namespace selectors pick pods (kube-dns here), never a bare address."""
    ip = ipaddress.ip_address(address)
    for rule in policy["spec"]["egress"]:
        ports = rule.get("ports")
        if ports and not any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports):
            continue
        peers = rule.get("to")
        if not peers:
            return True  # a rule without `to` allows every destination
        for peer in peers:
            block = peer.get("ipBlock")
            if block is None:
                continue
            net = ipaddress.ip_network(block["cidr"])
            if ip.version != net.version or ip not in net:
                continue
            if not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])):
                return True
    return False


def operator_policy(monkeypatch: pytest.MonkeyPatch, *args: str, egress: str | None = None) -> Doc:
    """The NetworkPolicy the operator builds, with the blocked ranges the chart hands it."""
    docs = render(*args)
    blocked = env_of(find(docs, "Deployment", "-operator"))["TROVE_OPERATOR_EGRESS_BLOCKED"]
    monkeypatch.setenv("TROVE_OPERATOR_EGRESS_BLOCKED", blocked)
    ranges = reconciler.blocked_ranges(OperatorSettings().operator_egress_blocked)
    api_env = env_of(find(docs, "Deployment", "-api"))
    settings = Settings(k8s_sandbox_egress=egress or api_env["TROVE_K8S_SANDBOX_EGRESS"])
    spec = TroveNamespaceSpec.model_validate(build_tns(settings, NamespaceRef("ws-1", "alice"))["spec"])
    return builders.build_network_policy(NAME, child_names(NAME), spec, ranges)


FORBIDDEN = {
    "cloud metadata": "169.254.169.254",
    "a pod (the API, MinIO, the operator's metrics)": "10.244.0.17",
    "the kube-apiserver's Service": "10.96.0.1",
    "a node": "10.0.0.4",
    "a node, by another private range": "192.168.49.2",
    "loopback": "127.0.0.1",
    "an IPv6 ULA": "fd12::5",
    "IPv6 link-local": "fe80::1",
}


def test_internet_egress_by_default_blocks_the_cluster_and_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = operator_policy(monkeypatch)
    assert policy["spec"]["ingress"] == []
    for what, address in FORBIDDEN.items():
        assert not reachable(policy, address), f"{what} ({address}) is reachable"
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        assert reachable(policy, address, 443)
        assert reachable(policy, address, 80)
    # Names still resolve: port 53 to the cluster's DNS pods, and only that.
    dns = [rule for rule in policy["spec"]["egress"] if rule.get("ports")]
    assert dns
    assert all({p["port"] for p in rule["ports"]} == {53} for rule in dns)


def test_node_and_cluster_ranges_come_from_values(monkeypatch: pytest.MonkeyPatch) -> None:
    args = (
        "--set",
        "cluster.nodeCidrs={203.0.113.0/24}",
        "--set",
        "cluster.podCidrs={100.96.0.0/11}",
        "--set-json",
        "sandbox.egressBlocked=[]",
    )
    policy = operator_policy(monkeypatch, *args)
    assert not reachable(policy, "203.0.113.9")  # a public node address
    assert not reachable(policy, "100.96.3.4")
    assert not reachable(policy, "10.96.0.1")  # the default service range stays
    assert not reachable(policy, "169.254.169.254")  # metadata, whatever the values
    assert reachable(policy, "8.8.8.8")


def test_egress_none_and_all(monkeypatch: pytest.MonkeyPatch) -> None:
    none = operator_policy(monkeypatch, egress="none")
    assert not any(reachable(none, a) for a in ("8.8.8.8", *FORBIDDEN.values()))
    every = operator_policy(monkeypatch, egress="all")
    assert reachable(every, "169.254.169.254")
    assert reachable(every, "8.8.8.8")
    docs = render("--set", "sandbox.egress=none")
    assert env_of(find(docs, "Deployment", "-api"))["TROVE_K8S_SANDBOX_EGRESS"] == "none"


def test_the_operator_blocks_metadata_even_when_told_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TROVE_OPERATOR_EGRESS_BLOCKED", raising=False)
    ranges = reconciler.blocked_ranges(OperatorSettings().operator_egress_blocked)
    spec = TroveNamespaceSpec.model_validate({"workspaceId": "ws-1", "namespace": "alice"})
    assert spec.egress == "internet"
    policy = builders.build_network_policy(NAME, child_names(NAME), spec, ranges)
    assert not any(reachable(policy, a) for a in FORBIDDEN.values())
    assert reachable(policy, "8.8.8.8")


# ── NetworkPolicies of the release's own pods ────────────────────────────────


@pytest.fixture(scope="module")
def defaults() -> list[Doc]:
    return render()


def test_minio_takes_connections_from_the_api_only(defaults: list[Doc]) -> None:
    policy = find(defaults, "NetworkPolicy", "-minio")
    assert policy["metadata"]["namespace"] == "trove"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}  # this namespace, the API's pods, nothing else
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"


@pytest.mark.parametrize("component", ["-api", "-operator"])
def test_api_and_operator_refuse_the_sandbox_namespace(defaults: list[Doc], component: str) -> None:
    policy = find(defaults, "NetworkPolicy", component)
    sandboxes = find(defaults, "Namespace", SANDBOXES)
    label = sandboxes["metadata"]["labels"]
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            if "namespaceSelector" in peer:
                # The sandbox namespace carries the label this selector requires to be absent.
                [expr] = peer["namespaceSelector"]["matchExpressions"]
                assert expr["operator"] == "DoesNotExist"
                assert expr["key"] in label
            else:
                block = peer["ipBlock"]
                net = ipaddress.ip_network(block["cidr"])
                if net.version == 4:
                    assert "10.244.0.0/16" in block["except"]  # sandbox pod addresses


def test_sandbox_namespace_denies_by_default(defaults: list[Doc]) -> None:
    deny = find(defaults, "NetworkPolicy", "-sandbox-default-deny")
    assert deny["metadata"]["namespace"] == SANDBOXES
    assert deny["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }
    off = render("--set", "networkPolicy.enabled=false")
    assert not [d for d in off if d["kind"] == "NetworkPolicy"]


# ── RBAC: who may do what, where ─────────────────────────────────────────────


def grants(docs: list[Doc], account: str) -> set[tuple[str, str, str]]:
    """(namespace or "*" for cluster-wide, resource, verb) granted to ServiceAccount trove/account."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    found: set[tuple[str, str, str]] = set()
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == account and s["namespace"] == "trove"
            for s in binding["subjects"]
        ):
            continue
        ref = binding["roleRef"]
        where = binding["metadata"]["namespace"] if binding["kind"] == "RoleBinding" else "*"
        role_ns = binding["metadata"]["namespace"] if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], role_ns, ref["name"])]
        for rule in role["rules"]:
            found |= {(where, r, v) for r in rule["resources"] for v in rule["verbs"]}
    return found


def test_the_api_may_exec_into_sandbox_pods_only(defaults: list[Doc]) -> None:
    api = grants(defaults, "t-trove-api")
    assert (SANDBOXES, "pods/exec", "create") in api
    assert {(ns, r) for ns, r, _ in api} == {
        (SANDBOXES, "pods/exec"),
        (SANDBOXES, "pods"),
        (SANDBOXES, "trovenamespaces"),
    }
    # Pods are only read (the warm pool's, to open their agents' channels ahead of a claim).
    assert {v for _, r, v in api if r == "pods"} == {"list", "watch"}


def test_the_operator_may_make_and_delete_sandbox_pods_only(defaults: list[Doc]) -> None:
    operator = grants(defaults, "t-trove-operator")
    assert (SANDBOXES, "pods", "create") in operator
    assert (SANDBOXES, "pods", "delete") in operator
    for ns, resource, verb in operator:
        assert "secret" not in resource, (ns, resource, verb)
        assert not resource.startswith("pods") or ns == SANDBOXES, (ns, resource, verb)
        # Cluster-wide: only kopf's reads of CRDs and namespaces.
        assert ns != "*" or (resource, verb) in {
            (r, v) for r in ("customresourcedefinitions", "namespaces") for v in ("list", "watch")
        }


def test_no_account_reads_secrets_or_execs_outside_the_sandboxes(defaults: list[Doc]) -> None:
    for role in (d for d in defaults if d["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"], role["metadata"]["name"]
            if "pods/exec" in rule["resources"] or "pods" in rule["resources"]:
                assert role["kind"] == "Role"
                assert role["metadata"]["namespace"] == SANDBOXES


def test_sandbox_namespace_is_made_named_and_never_the_release_one(defaults: list[Doc]) -> None:
    namespace = find(defaults, "Namespace", SANDBOXES)
    assert namespace["metadata"]["labels"]["trove.dev/sandboxes"] == "t"
    for kind in ("TroveWarmPool", "ResourceQuota"):
        assert find(defaults, kind)["metadata"]["namespace"] == SANDBOXES
    operator = find(defaults, "Deployment", "-operator")
    assert env_of(operator)["TROVE_K8S_NAMESPACE"] == SANDBOXES
    assert env_of(find(defaults, "Deployment", "-api"))["TROVE_K8S_NAMESPACE"] == SANDBOXES
    hook = find(defaults, "Job", "-cleanup")
    assert {e["name"]: e.get("value") for e in hook["spec"]["template"]["spec"]["containers"][0]["env"]}[
        "NAMESPACE"
    ] == SANDBOXES
    assert find(defaults, "Role", "-cleanup")["metadata"]["namespace"] == SANDBOXES
    named = render("--set", "sandbox.namespace.name=agents", "--set", "sandbox.namespace.create=false")
    assert "Namespace" not in {d["kind"] for d in named}
    assert find(named, "Role", "-api")["metadata"]["namespace"] == "agents"
    from tests.support.helm import render_error

    assert "is the release namespace" in render_error("--set", "sandbox.namespace.name=trove")
    assert "sandbox.egress" in render_error("--set", "sandbox.egress=some")


# ── quota, ephemeral storage, processes ──────────────────────────────────────


def pods_the_operator_builds(docs: list[Doc]) -> Iterator[dict[str, Any]]:
    """A namespace's pod (from what the API asks for) and a warm one (from the chart's pool)."""
    env = env_of(find(docs, "Deployment", "-api"))
    settings = Settings.model_validate(
        {k.removeprefix("TROVE_").lower(): v for k, v in env.items() if isinstance(v, str)}
    )
    spec = TroveNamespaceSpec.model_validate(build_tns(settings, NamespaceRef("ws-1", "alice"))["spec"])
    yield builders.build_pod(NAME, child_names(NAME), spec)
    template = SandboxTemplate.model_validate(find(docs, "TroveWarmPool")["spec"]["template"])
    yield pool_builders.build_warm_pod("t-trove", pool_builders.member_names("t-trove", "abcd1234"), template)


def test_quota_admits_the_pods_the_operator_builds(defaults: list[Doc]) -> None:
    quota = find(defaults, "ResourceQuota")
    hard = quota["spec"]["hard"]
    assert {"pods", "requests.storage", "limits.ephemeral-storage", "requests.memory", "limits.cpu"} <= set(
        hard
    )
    compute = [k.split(".", 1) for k in hard if k.split(".", 1)[0] in ("requests", "limits")]
    compute = [(kind, what) for kind, what in compute if what != "storage"]
    for pod in pods_the_operator_builds(defaults):
        for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
            for kind, what in compute:
                assert what in container["resources"][kind], (container["name"], kind, what)
        [sandbox] = pod["spec"]["containers"]
        assert sandbox["resources"]["limits"]["ephemeral-storage"] == "1Gi"
        assert {"name": "TROVE_MAX_PROCESSES", "value": "1024"} in sandbox["env"]
    assert "ResourceQuota" not in {d["kind"] for d in render("--set", "sandbox.quota.enabled=false")}


def test_each_sandbox_pod_runs_as_its_own_uid_kept_across_a_claim() -> None:
    uids = {builders.sandbox_uid(f"ns-{i}-data") for i in range(2000)}
    assert len(uids) == 2000
    assert all(builders.SANDBOX_UID_BASE <= u < 2**31 for u in uids)
    template = SandboxTemplate()
    names = pool_builders.member_names("pool", "abcd1234")
    warm = pool_builders.build_warm_pod("pool", names, template)
    spec = TroveNamespaceSpec.model_validate({"workspaceId": "ws-1", "namespace": "alice"})
    claimed = builders.build_pod(NAME, ChildNames(pod=names.pod, pvc=names.pvc, network_policy="x"), spec)
    assert pool_builders.fits(warm, spec)
    uid = warm["spec"]["securityContext"]["runAsUser"]
    assert claimed["spec"]["securityContext"]["runAsUser"] == uid == builders.sandbox_uid(names.pvc)
    assert claimed["spec"]["containers"][0]["securityContext"]["runAsUser"] == uid
    # The volume becomes that uid's, tree and all when an older pod's uid owns it.
    script = claimed["spec"]["initContainers"][0]["command"][2]
    assert f"chown -R -h {uid}:{uid} /workspace" in script
    other = builders.build_pod("bob-0123456789ab", child_names("bob-0123456789ab"), spec)
    assert other["spec"]["securityContext"]["runAsUser"] != uid


# ── API values: trusted proxies; NOTES warnings ──────────────────────────────


def test_forwarded_allow_ips_reaches_the_api() -> None:
    docs = render("--set", "api.forwardedAllowIps=10.0.0.0/8\\,192.168.1.7")
    assert env_of(find(docs, "Deployment", "-api"))["TROVE_FORWARDED_ALLOW_IPS"] == "10.0.0.0/8,192.168.1.7"
    assert "TROVE_FORWARDED_ALLOW_IPS" not in env_of(find(render(), "Deployment", "-api"))
