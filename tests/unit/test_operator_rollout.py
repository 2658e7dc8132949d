"""Sandbox rollouts, decided without a cluster: which spec a namespace should have, which
revision its pod runs, and when an outdated pod is replaced under each policy."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest

from trove_core.crd import ANNOTATION_LAST_ACTIVITY, LABEL_MANAGED_BY, child_names
from trove_operator import builders, pool_builders, rollout
from trove_operator.reconciler import _merged, _replace, idle_for
from trove_operator.spec import SandboxTemplate, TroveNamespaceSpec

AT = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi", "ephemeralStorage": "64Mi"},
    "limits": {"cpu": "1", "memory": "1Gi", "ephemeralStorage": "1Gi"},
}
TEMPLATE = {
    "image": "trove-sandbox:0.1.0",
    "imagePullPolicy": "IfNotPresent",
    "resources": RESOURCES,
    "maxProcesses": 1024,
    "egress": "internet",
    "idleSuspendSeconds": 300,
}


def api_tns(name: str = "alice-0123", managed_by: str = "trove-api", **spec: Any) -> dict[str, Any]:
    """A TroveNamespace as the API creates it (and the API server defaults it)."""
    return {
        "metadata": {"name": name, "namespace": "sb", "labels": {LABEL_MANAGED_BY: managed_by}},
        "spec": {
            "workspaceId": "ws-1",
            "namespace": name.split("-")[0],
            "storage": {"size": "1Gi"},
            "suspended": False,
            "deletionPolicy": "Delete",
            **copy.deepcopy(TEMPLATE),
            **spec,
        },
    }


def pod_of(body: dict[str, Any]) -> dict[str, Any]:
    spec = TroveNamespaceSpec.model_validate(body["spec"])
    return builders.build_pod(body["metadata"]["name"], child_names(body["metadata"]["name"]), spec)


def stamped(body: dict[str, Any], idle_s: float) -> dict[str, Any]:
    stamp = (AT - dt.timedelta(seconds=idle_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body["metadata"]["annotations"] = {ANNOTATION_LAST_ACTIVITY: stamp}
    return body


# ── the configured template ───────────────────────────────────────────────────


def test_an_empty_template_leaves_specs_as_made() -> None:
    assert rollout.parse_template("") == {}
    assert rollout.template_patch(api_tns(image="old:1"), {}) == {}


def test_the_template_parses_and_is_checked_like_a_spec() -> None:
    assert rollout.parse_template(json.dumps(TEMPLATE)) == TEMPLATE


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '["image"]',
        '{"storage": {"size": "2Gi"}}',  # a PVC's size is fixed when it is made
        '{"workspaceId": "ws-2"}',
        '{"egress": "sometimes"}',
        '{"maxProcesses": 3}',
    ],
)
def test_a_bad_template_stops_the_start(text: str) -> None:
    with pytest.raises(rollout.TemplateError):
        rollout.parse_template(text)


def test_an_api_made_namespace_gets_exactly_the_changed_fields() -> None:
    body = api_tns()
    assert rollout.template_patch(body, TEMPLATE) == {}
    changed = TEMPLATE | {
        "image": "trove-sandbox:0.1.1",
        "resources": {**RESOURCES, "limits": {**RESOURCES["limits"], "cpu": "2"}},
        "egress": "none",
    }
    patch = rollout.template_patch(body, changed)
    assert patch == {"image": "trove-sandbox:0.1.1", "resources": changed["resources"], "egress": "none"}
    # Applied as a merge patch, nothing is left to change: the next pass patches nothing.
    body["spec"] = _merged(body["spec"], patch)
    assert rollout.template_patch(body, changed) == {}


def test_a_partial_template_object_leaves_the_other_keys() -> None:
    body = api_tns()
    patch = rollout.template_patch(body, {"resources": {"limits": {"cpu": "2"}}})
    merged = _merged(body["spec"], patch)
    assert merged["resources"]["limits"] == {**RESOURCES["limits"], "cpu": "2"}
    assert merged["resources"]["requests"] == RESOURCES["requests"]


def test_hand_made_namespaces_keep_their_spec() -> None:
    assert rollout.template_patch(api_tns(managed_by="someone", image="mine:1"), TEMPLATE) == {}
    unlabelled = api_tns(image="mine:1")
    del unlabelled["metadata"]["labels"]
    assert rollout.template_patch(unlabelled, TEMPLATE) == {}


# ── revisions ────────────────────────────────────────────────────────────────


def test_the_revision_is_the_templates_not_the_namespaces() -> None:
    alice, bob = api_tns("alice-0123"), api_tns("bob-4567")
    revisions = {
        pod_of(b)["metadata"]["annotations"][builders.ANNOTATION_TEMPLATE_REVISION] for b in (alice, bob)
    }
    assert len(revisions) == 1
    # Pods differ (own claim, own uid), revisions do not.
    assert pod_of(alice)["spec"] != pod_of(bob)["spec"]
    # A warm pool member of the same template carries the same revision.
    template = SandboxTemplate.model_validate(alice["spec"])
    member = pool_builders.build_warm_pod("pool", pool_builders.member_names("pool", "ab12cd34"), template)
    assert member["metadata"]["annotations"][builders.ANNOTATION_TEMPLATE_REVISION] in revisions


@pytest.mark.parametrize(
    "change", [{"image": "trove-sandbox:0.1.1"}, {"maxProcesses": 2048}, {"imagePullPolicy": "Always"}]
)
def test_a_pod_template_change_is_a_new_revision_and_outdates_the_pod(change: dict[str, Any]) -> None:
    before = api_tns()
    after = api_tns(**change)
    old_pod, desired = pod_of(before), pod_of(after)
    wanted = desired["metadata"]["annotations"][builders.ANNOTATION_TEMPLATE_REVISION]
    old = old_pod["metadata"]["annotations"][builders.ANNOTATION_TEMPLATE_REVISION]
    assert wanted != old
    assert rollout.outdated(old_pod, desired)
    assert rollout.pod_revision(old_pod, desired, wanted) == old
    assert not rollout.outdated(desired, desired)
    assert rollout.pod_revision(desired, desired, wanted) == wanted
    assert rollout.pod_revision(None, desired, wanted) is None


@pytest.mark.parametrize("change", [{"egress": "none"}, {"idleSuspendSeconds": 60}])
def test_changes_outside_the_pod_roll_nothing(change: dict[str, Any]) -> None:
    """Egress is the NetworkPolicy's (replaced in place), the idle limit the operator's own."""
    assert not rollout.outdated(pod_of(api_tns()), pod_of(api_tns(**change)))


def test_a_pod_from_before_revisions_is_current_when_its_spec_is() -> None:
    desired = pod_of(api_tns())
    wanted = desired["metadata"]["annotations"][builders.ANNOTATION_TEMPLATE_REVISION]
    older = copy.deepcopy(desired)
    del older["metadata"]["annotations"][builders.ANNOTATION_TEMPLATE_REVISION]
    assert rollout.pod_revision(older, desired, wanted) == wanted
    older_and_outdated = copy.deepcopy(older)
    older_and_outdated["metadata"]["annotations"][builders.ANNOTATION_SPEC_HASH] = "0" * 16
    assert rollout.pod_revision(older_and_outdated, desired, wanted) == "unknown"


# ── when an outdated pod is replaced ─────────────────────────────────────────


@pytest.mark.parametrize(
    ("policy", "idle_s", "expected"),
    [
        ("immediate", 0, True),
        ("immediate", None, True),
        ("idle", 0, False),  # a call may be in flight
        ("idle", 149, False),
        ("idle", 150, True),
        ("idle", 10_000, True),
        ("idle", None, False),  # no stamp to go by: not provably idle
        ("never", 10_000, False),
    ],
)
def test_replace_now_per_policy(policy: str, idle_s: float | None, expected: bool) -> None:
    assert rollout.replace_now(policy, idle_s, 150) is expected


def test_a_busy_namespace_is_not_idle_until_its_stamp_ages() -> None:
    """The API re-stamps a namespace with a call in flight at every flush: its age stays short."""
    busy = stamped(api_tns(), 20)
    quiet = stamped(api_tns(), 600)
    assert not rollout.replace_now("idle", idle_for(busy, AT), 150)
    assert rollout.replace_now("idle", idle_for(quiet, AT), 150)


def test_rollout_states() -> None:
    body = api_tns()
    desired, old = pod_of(api_tns(image="new:2")), pod_of(body)
    assert rollout.state("idle", None, False) == rollout.CURRENT
    assert rollout.state("idle", desired, False) == rollout.CURRENT
    assert rollout.state("idle", old, True) == rollout.WAITING
    assert rollout.state("never", old, True) == rollout.HELD
    leaving = copy.deepcopy(old)
    leaving["metadata"]["deletionTimestamp"] = "2026-12-03T12:00:00Z"
    assert rollout.state("idle", leaving, True) == rollout.ROLLING


def test_the_idle_check_rolls_only_waiting_namespaces_gone_idle() -> None:
    def body(state: str, idle_s: float, **spec: Any) -> dict[str, Any]:
        found = stamped(api_tns(**spec), idle_s)
        found["status"] = {"phase": "Ready", "rollout": state}
        return found

    def due(found: dict[str, Any], policy: str = "idle") -> bool:
        return rollout.due(found, policy, idle_for(found, AT), 150)

    assert due(body(rollout.WAITING, 600))
    assert not due(body(rollout.WAITING, 30))
    assert not due(body(rollout.CURRENT, 600))
    assert not due(body(rollout.HELD, 600), "never")
    assert not due(body(rollout.WAITING, 600, suspended=True))  # its next pod is new anyway


def test_the_status_carries_revisions_and_drops_the_pod_revision_without_a_pod() -> None:
    status = builders.build_status(
        phase="Suspended",
        reason="Suspended",
        message="",
        children=child_names("n"),
        pod_exists=False,
        generation=2,
        previous=None,
        now="2026-12-03T12:00:00Z",
        rollout={"templateRevision": "abc", "podRevision": None, "rollout": rollout.CURRENT},
    )
    assert (status["templateRevision"], status["podRevision"], status["rollout"]) == ("abc", None, "Current")


# ── the reconciler's decision, with the default settings (policy idle, 150 s) ──


def test_the_reconciler_keeps_a_busy_namespaces_outdated_pod_and_replaces_an_idle_ones() -> None:
    """The old operator deleted every outdated pod at once, mid-call or not."""
    now = dt.datetime.now(dt.UTC)

    def body_idle_for(seconds: float) -> dict[str, Any]:
        stamp = (now - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = api_tns(maxProcesses=2048)
        body["metadata"]["annotations"] = {ANNOTATION_LAST_ACTIVITY: stamp}
        return body

    old_pod, desired = pod_of(api_tns()), pod_of(api_tns(maxProcesses=2048))
    assert not _replace(body_idle_for(5), old_pod, desired)  # a call may be in flight
    assert _replace(body_idle_for(3600), old_pod, desired)
    assert not _replace(body_idle_for(3600), desired, desired)  # current: nothing to roll
    ended = copy.deepcopy(desired)
    ended["status"] = {"phase": "Failed"}
    assert _replace(body_idle_for(5), ended, desired)  # an ended pod comes back at once


def test_warm_members_of_an_older_template_are_replaced() -> None:
    old = SandboxTemplate.model_validate({"maxProcesses": 512})
    new = SandboxTemplate.model_validate({"maxProcesses": 640})
    pods, pvcs = [], []
    for token in ("aaaa0001", "aaaa0002"):
        names = pool_builders.member_names("pool", token)
        pods.append(pool_builders.build_warm_pod("pool", names, old))
        pvcs.append(pool_builders.build_warm_pvc("pool", names, old))
    assert pool_builders.plan(2, pods, pvcs, old).delete == []
    todo = pool_builders.plan(2, pods, pvcs, new)
    assert sorted(todo.delete) == sorted(p["metadata"]["name"] for p in pods)
    assert todo.create == 2
    assert builders.template_revision(old) != builders.template_revision(new)
