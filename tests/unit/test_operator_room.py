"""Which namespace gives its pod up when another cannot be scheduled: the least recently used idle one."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

from trove_core.crd import ANNOTATION_LAST_ACTIVITY
from trove_operator.room import Pacing, make_room, pick_victim

AT = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def tns(name: str, idle_s: float | None, phase: str = "Ready", **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "generation": 1, "creationTimestamp": "2026-12-03T00:00:00Z"}
    if idle_s is not None:
        stamp = (AT - dt.timedelta(seconds=idle_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["annotations"] = {ANNOTATION_LAST_ACTIVITY: stamp}
    return {"metadata": meta, "spec": spec, "status": {"phase": phase, "observedGeneration": 1}}


def unschedulable_pod(message: str) -> dict[str, Any]:
    """A pending pod as the scheduler leaves it when it cannot place it, saying why."""
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    return {"metadata": {"name": "tns-alice-pod"}, "status": {"phase": "Pending", "conditions": [condition]}}


def test_the_longest_idle_ready_namespace_is_chosen() -> None:
    found = pick_victim([tns("a", 200), tns("b", 900), tns("c", 400)], "waiting", AT, 150)
    assert found is not None
    assert found["metadata"]["name"] == "b"


def test_recently_used_ones_are_never_chosen() -> None:
    """A call may be in flight in any namespace whose stamp is younger than the floor."""
    assert pick_victim([tns("a", 30), tns("b", 149)], "waiting", AT, 150) is None


def test_only_running_ready_namespaces_other_than_the_waiting_one_qualify() -> None:
    deleting = tns("deleting", 5000)
    deleting["metadata"]["deletionTimestamp"] = "2026-12-03T11:00:00Z"
    stale_status = tns("newer-spec", 5000)
    stale_status["metadata"]["generation"] = 2  # the status reports an older spec
    candidates = [
        tns("waiting", 9000),
        tns("suspended", 8000, phase="Suspended", suspended=True),
        tns("pending", 7000, phase="Pending"),
        deleting,
        stale_status,
        tns("ok", 300),
    ]
    found = pick_victim(candidates, "waiting", AT, 150)
    assert found is not None
    assert found["metadata"]["name"] == "ok"


def test_without_a_stamp_the_creation_time_counts() -> None:
    found = pick_victim([tns("never-called", None), tns("used", 600)], "waiting", AT, 150)
    assert found is not None
    assert found["metadata"]["name"] == "never-called"  # created 12 h before AT


def test_the_api_says_no_capacity_with_a_short_retry_for_an_unschedulable_pod() -> None:
    """The status the operator writes for a pod the scheduler cannot place, read by the API."""
    from trove_api.runtimes.kubernetes.namespaces import not_ready_error
    from trove_core.crd import child_names
    from trove_operator import builders
    from trove_operator.spec import TroveNamespaceSpec

    spec = TroveNamespaceSpec.model_validate({"workspaceId": "ws-1", "namespace": "alice"})
    pod = unschedulable_pod("0/1 nodes are available: 1 Insufficient cpu.")
    phase, reason, message = builders.assess(spec, None, pod)
    status = builders.build_status(
        phase=phase,
        reason=reason,
        message=message,
        children=child_names("tns-alice"),
        pod_exists=True,
        generation=1,
        previous=None,
        now="2026-12-03T12:00:00Z",
    )
    error = not_ready_error({"metadata": {"generation": 1}, "status": status}, 20)
    assert error.status == 503
    assert error.code == "sandbox_not_ready"
    assert error.retry_after == 5
    assert "No capacity" in error.detail
    assert "Insufficient cpu" in error.detail
    assert "freeing an idle sandbox" in error.detail
    other = not_ready_error({"metadata": {"generation": 1}, "status": {"phase": "Pending"}}, 20)
    assert "not ready after 20s" in other.detail


def test_a_pod_waiting_for_its_new_claim_is_not_a_full_node() -> None:
    """Seen on the test cluster: every new namespace's pod is briefly "Unschedulable" because its
    claim has no volume yet; the operator took it for a full node and looked for a namespace to
    suspend, and the API would have answered "No capacity"."""
    from trove_api.runtimes.kubernetes.namespaces import not_ready_error
    from trove_operator import builders, room
    from trove_operator.spec import TroveNamespaceSpec

    spec = TroveNamespaceSpec.model_validate({"workspaceId": "ws-1", "namespace": "alice"})
    pod = unschedulable_pod("0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims.")
    phase, reason, message = builders.assess(spec, None, pod)
    assert (phase, reason) == ("Pending", "PVCNotBound")
    assert reason != room.UNSCHEDULABLE
    status = {"phase": phase, "message": message, "conditions": [{"type": "Ready", "reason": reason}]}
    error = not_ready_error({"metadata": {"generation": 1}, "status": status}, 20)
    assert "No capacity" not in error.detail


def test_looking_for_room_backs_off_while_nothing_qualifies() -> None:
    pacing = Pacing(first_s=10, max_s=40)
    key = "trove/waiting"
    assert pacing.due(key, 0)
    looks = [pacing.found_nothing(key, 0)]
    assert not pacing.due(key, 9.9)
    assert pacing.due(key, 10)
    looks.append(pacing.found_nothing(key, 10))  # next gap: 20
    assert not pacing.due(key, 29.9)
    looks.append(pacing.found_nothing(key, 30))  # 40, the cap
    looks.append(pacing.found_nothing(key, 70))  # still 40
    assert not pacing.due(key, 109.9)
    assert pacing.due(key, 110)
    assert looks == [1, 2, 3, 4]
    assert pacing.due("trove/other", 0)  # each waiting namespace has its own pace
    pacing.forget(key)  # its pod was placed: the next wait starts again at once
    assert pacing.due(key, 0)


class ListingKube:
    """Counts LIST calls: the cost a pending namespace puts on the API server (a stand-in for
    the cluster, which cannot be made to keep a node full on demand in a unit test)."""

    def __init__(self, namespaces: list[dict[str, Any]]) -> None:
        self.namespaces = namespaces
        self.lists = 0
        self.suspended: list[str] = []

    def list_tns(self, _: str) -> list[dict[str, Any]]:
        self.lists += 1
        return self.namespaces

    def patch_spec(self, _: str, name: str, patch: dict[str, Any]) -> None:
        self.suspended.append(name)


def test_a_full_node_is_looked_at_and_warned_about_rarely(caplog: pytest.LogCaptureFixture) -> None:
    kube = ListingKube([tns("busy", 5)])
    waiting = {"metadata": {"namespace": "trove", "name": "waiting"}}
    pacing = Pacing(first_s=10, max_s=300)
    with caplog.at_level(logging.WARNING, logger="trove_operator.room"):
        for second in range(0, 120, 2):  # the periodic pass, every 2 s for 2 minutes
            assert make_room(kube, waiting, 150, AT, pacing=pacing, now=second) is None  # type: ignore[arg-type]
    assert kube.lists == 4  # at 0, 10, 30 and 70 s
    assert len([r for r in caplog.records if "no idle namespace" in r.message]) == 1
    kube.namespaces.append(tns("idle", 900))
    assert make_room(kube, waiting, 150, AT, pacing=pacing, now=150) == "idle"  # type: ignore[arg-type]
    assert kube.suspended == ["idle"]
