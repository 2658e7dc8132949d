"""Pure warm-pool logic: which waiting pods a namespace may take, the claim patch, the replenish plan."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch  # type: ignore[import-untyped]
import pytest

from trove_core.crd import ANNOTATION_POD_NAME, ANNOTATION_PVC_NAME, LABEL_NAMESPACE, LABEL_POOL, child_names
from trove_operator import builders, pool_builders
from trove_operator.spec import SandboxTemplate, TroveNamespaceSpec

POOL = "default"
TEMPLATE = SandboxTemplate.model_validate({"image": "trove-sandbox:0.1.0", "storage": {"size": "64Mi"}})


def _spec(**extra: Any) -> TroveNamespaceSpec:
    values = {
        "workspaceId": "ws-1",
        "namespace": "alice",
        "image": "trove-sandbox:0.1.0",
        "storage": {"size": "64Mi"},
    }
    return TroveNamespaceSpec.model_validate(values | extra)


def _member(token: str, *, ready: bool = True, created: str = "2026-11-26T00:00:00Z", **template: Any) -> Any:
    names = pool_builders.member_names(POOL, token)
    tpl = SandboxTemplate.model_validate(TEMPLATE.model_dump(by_alias=True) | template)
    pod = pool_builders.build_warm_pod(POOL, names, tpl)
    pod["metadata"]["creationTimestamp"] = created
    pod["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return pod


def test_member_names_are_dns_labels() -> None:
    names = pool_builders.member_names("p" * 80, "0123abcd")
    assert max(len(names.pvc), len(names.pod)) <= 63
    assert (names.pod[-13:], names.pvc[-14:]) == ("-0123abcd-pod", "-0123abcd-data")


def test_a_namespace_fits_a_pod_of_its_own_template() -> None:
    pod = _member("aaaa0000")
    assert pool_builders.fits(pod, _spec())
    # The claimed pod is then not stale to the reconciler: the namespace would build the same spec.
    children = child_names(
        "alice-x",
        {
            ANNOTATION_POD_NAME: pod["metadata"]["name"],
            ANNOTATION_PVC_NAME: pool_builders.claim_name(pod) or "",
        },
    )
    wanted = builders.build_pod("alice-x", children, _spec())
    assert wanted["spec"] == pod["spec"]
    assert (
        wanted["metadata"]["annotations"][builders.ANNOTATION_SPEC_HASH]
        == pod["metadata"]["annotations"][builders.ANNOTATION_SPEC_HASH]
    )


@pytest.mark.parametrize(
    "different",
    [
        {"image": "other:1"},
        {"storage": {"size": "1Gi"}},
        {"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}},
    ],
)
def test_a_different_template_does_not_fit(different: dict[str, Any]) -> None:
    assert not pool_builders.fits(_member("aaaa0000"), _spec(**different))


def test_candidates_ready_first_then_oldest_and_never_ended_or_leaving() -> None:
    young_ready = _member("00000001", created="2026-11-26T00:00:05Z")
    old_ready = _member("00000002", created="2026-11-26T00:00:01Z")
    starting = _member("00000003", ready=False, created="2026-11-26T00:00:00Z")
    failed = _member("00000004")
    failed["status"]["phase"] = "Failed"
    leaving = _member("00000005")
    leaving["metadata"]["deletionTimestamp"] = "2026-11-26T00:01:00Z"
    claimed = _member("00000006")
    del claimed["metadata"]["labels"][LABEL_POOL]
    other = _member("00000007", image="other:1")
    order = pool_builders.candidates(
        [young_ready, starting, failed, leaving, claimed, other, old_ready], _spec()
    )
    assert [p["metadata"]["name"] for p in order] == [
        old_ready["metadata"]["name"],
        young_ready["metadata"]["name"],
        starting["metadata"]["name"],
    ]


def test_claim_patch_moves_the_pod_from_the_pool_to_the_namespace() -> None:
    pod = _member("aaaa0000")
    owners = [{"apiVersion": "trove.dev/v1alpha1", "kind": "TroveNamespace", "name": "alice-x", "uid": "u-1"}]
    ops = pool_builders.build_claim_pod_patch(pod, "alice-x", _spec(), owners)
    claimed = jsonpatch.apply_patch(copy.deepcopy(pod), ops)
    labels = claimed["metadata"]["labels"]
    assert LABEL_POOL not in labels
    assert labels[LABEL_NAMESPACE] == "alice-x"
    assert claimed["metadata"]["ownerReferences"] == owners
    annotations = claimed["metadata"]["annotations"]
    assert (
        annotations[builders.ANNOTATION_SPEC_HASH]
        == pod["metadata"]["annotations"][builders.ANNOTATION_SPEC_HASH]
    )
    assert annotations[builders.ANNOTATION_WORKSPACE_ID] == "ws-1"
    assert claimed["spec"] == pod["spec"]


def test_claim_patch_fails_on_a_pod_someone_else_claimed() -> None:
    pod = _member("aaaa0000")
    ops = pool_builders.build_claim_pod_patch(pod, "alice-x", _spec(), [])
    taken = jsonpatch.apply_patch(
        copy.deepcopy(pod), pool_builders.build_claim_pod_patch(pod, "bob-y", _spec(), [])
    )
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(taken, ops)


def test_plan_fills_up_and_replaces_stale_or_ended_members() -> None:
    good = _member("00000001")
    stale = _member("00000002", image="old:1")
    ended = _member("00000003")
    ended["status"]["phase"] = "Succeeded"
    todo = pool_builders.plan(3, [good, stale, ended], [], TEMPLATE)
    assert todo.create == 2
    assert sorted(todo.delete) == sorted([stale["metadata"]["name"], ended["metadata"]["name"]])
    assert (todo.warm, todo.ready) == (1, 1)


def test_plan_trims_surplus_keeping_ready_members() -> None:
    pods = [_member(f"0000000{i}", ready=i != 1, created=f"2026-11-26T00:00:0{i}Z") for i in range(4)]
    todo = pool_builders.plan(2, pods, [], TEMPLATE)
    assert todo.create == 0
    kept = {pods[0]["metadata"]["name"], pods[2]["metadata"]["name"]}
    assert set(todo.delete) == {p["metadata"]["name"] for p in pods} - kept
    assert (todo.warm, todo.ready) == (2, 2)


def test_plan_names_pvcs_without_a_pool_pod_as_orphans() -> None:
    pod = _member("00000001")
    mine = pool_builders.build_warm_pvc(POOL, pool_builders.member_names(POOL, "00000001"), TEMPLATE)
    lonely = pool_builders.build_warm_pvc(POOL, pool_builders.member_names(POOL, "00000009"), TEMPLATE)
    todo = pool_builders.plan(1, [pod], [mine, lonely], TEMPLATE)
    assert todo.orphans == [
        pool_builders.Orphan(lonely["metadata"]["name"], pool_builders.member_names(POOL, "00000009").pod)
    ]


def test_pool_policy_admits_nothing_and_selects_only_waiting_pods() -> None:
    policy = pool_builders.build_pool_network_policy(POOL)["spec"]
    assert (policy["ingress"], policy["egress"]) == ([], [])
    assert policy["podSelector"]["matchLabels"][LABEL_POOL] == POOL


def test_pool_status_counts() -> None:
    todo = pool_builders.plan(2, [_member("00000001"), _member("00000002", ready=False)], [], TEMPLATE)
    assert pool_builders.build_pool_status(todo, 2, 7) == {
        "size": 2,
        "warm": 2,
        "ready": 1,
        "observedGeneration": 7,
    }


def test_waiting_members_yield_to_namespace_pods_and_still_fit() -> None:
    """Issue 16, item 1: members carry the pool's low PriorityClass (the scheduler preempts them
    for namespace pods on a full node), outside the hash a namespace matches them by."""
    names = pool_builders.member_names(POOL, "0123abcd")
    low = pool_builders.build_warm_pod(POOL, names, TEMPLATE, "trove-warm-pool")
    assert low["spec"]["priorityClassName"] == "trove-warm-pool"
    plain = pool_builders.build_warm_pod(POOL, names, TEMPLATE)
    assert "priorityClassName" not in plain["spec"]
    assert low["metadata"]["annotations"] == plain["metadata"]["annotations"]
    assert pool_builders.fits(low, _spec())
    # A namespace's own pod has the default priority, which outranks the pool's.
    own = builders.build_pod("tns-alice", child_names("tns-alice"), _spec())
    assert "priorityClassName" not in own["spec"]


def test_the_pool_spec_names_its_priority_class() -> None:
    from trove_operator.spec import TroveWarmPoolSpec

    spec = TroveWarmPoolSpec.model_validate({"size": 2, "priorityClassName": "trove-warm-pool"})
    assert spec.priority_class_name == "trove-warm-pool"
    assert TroveWarmPoolSpec.model_validate({"size": 2}).priority_class_name is None
