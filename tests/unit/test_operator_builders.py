"""Pure operator builders: manifests against golden YAML, hardening, status assessment.

Set ``TROVE_UPDATE_GOLDEN=1`` to rewrite the golden files after an intended change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from trove_core.crd import child_names
from trove_operator import builders
from trove_operator.spec import TroveNamespaceSpec

DATA = Path(__file__).parent / "data"
NAME = "alice-0123456789ab"
CHILDREN = child_names(NAME)


def _spec(**extra: Any) -> TroveNamespaceSpec:
    return TroveNamespaceSpec.model_validate({"workspaceId": "ws-1", "namespace": "alice", **extra})


def _golden(name: str, manifest: dict[str, Any]) -> None:
    path = DATA / name
    rendered = yaml.safe_dump(manifest, sort_keys=True)
    if os.environ.get("TROVE_UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert rendered == path.read_text(), f"{name} changed; TROVE_UPDATE_GOLDEN=1 rewrites it"


def test_pvc_golden() -> None:
    spec = _spec(storage={"size": "5Gi", "storageClassName": "fast"})
    _golden("pvc.yaml", builders.build_pvc(NAME, CHILDREN, spec))


def test_pvc_without_class_uses_the_cluster_default() -> None:
    assert "storageClassName" not in builders.build_pvc(NAME, CHILDREN, _spec())["spec"]


def test_pod_golden() -> None:
    _golden("pod.yaml", builders.build_pod(NAME, CHILDREN, _spec()))


def test_network_policy_golden() -> None:
    _golden("netpol-all.yaml", builders.build_network_policy(NAME, CHILDREN, _spec(egress="all")))
    _golden(
        "netpol-internet.yaml",
        builders.build_network_policy(
            NAME, CHILDREN, _spec(), ["10.244.0.0/16", "169.254.0.0/16", "fd00::/8"]
        ),
    )
    _golden("netpol-none.yaml", builders.build_network_policy(NAME, CHILDREN, _spec(egress="none")))


def test_pod_is_hardened() -> None:
    pod = builders.build_pod(NAME, CHILDREN, _spec())["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["terminationGracePeriodSeconds"] <= 5
    (sandbox,) = pod["containers"]
    context = sandbox["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsUser"] != 0
    assert set(sandbox["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}
    # The one root container may only chown the volume (and read the tree it chowns).
    (init,) = pod["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_READ_SEARCH"]}
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert init["command"][:2] == ["/bin/sh", "-c"]


def test_spec_values_reach_the_pod() -> None:
    spec = _spec(
        image="img:1",
        imagePullPolicy="Never",
        resources={"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    )
    pod = builders.build_pod(NAME, CHILDREN, spec)
    sandbox = pod["spec"]["containers"][0]
    assert (sandbox["image"], sandbox["imagePullPolicy"]) == ("img:1", "Never")
    assert sandbox["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == CHILDREN.pvc


def test_spec_hash_changes_with_the_spec() -> None:
    one = builders.build_pod(NAME, CHILDREN, _spec())["metadata"]["annotations"]
    two = builders.build_pod(NAME, CHILDREN, _spec(image="other:1"))["metadata"]["annotations"]
    key = builders.ANNOTATION_SPEC_HASH
    assert one[key] != two[key]


def test_network_policy_denies_ingress_and_follows_egress() -> None:
    allow = builders.build_network_policy(NAME, CHILDREN, _spec(egress="all"))["spec"]
    deny = builders.build_network_policy(NAME, CHILDREN, _spec(egress="none"))["spec"]
    assert allow["ingress"] == deny["ingress"] == []
    assert set(allow["policyTypes"]) == {"Ingress", "Egress"}
    assert (allow["egress"], deny["egress"]) == ([{}], [])


def test_long_workspace_ids_make_valid_label_values() -> None:
    labels = builders.build_labels(NAME, _spec(workspaceId="w" * 128), "sandbox")
    assert all(len(v) <= 63 for v in labels.values())


def _pod(phase: str = "Running", ready: bool = True, waiting: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}} if waiting is None else {"waiting": {"reason": waiting}}
    return {
        "metadata": {"name": CHILDREN.pod},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "sandbox", "state": state}],
        },
    }


BOUND = {"metadata": {"name": CHILDREN.pvc}, "status": {"phase": "Bound"}}


@pytest.mark.parametrize(
    ("spec", "pvc", "pod", "expected"),
    [
        (_spec(), BOUND, _pod(), ("Ready", "PodReady")),
        (_spec(), BOUND, None, ("Pending", "PodCreating")),
        (_spec(), {**BOUND, "status": {"phase": "Pending"}}, None, ("Pending", "PVCNotBound")),
        (
            _spec(),
            BOUND,
            _pod(phase="Pending", ready=False, waiting="ErrImageNeverPull"),
            ("Failed", "ErrImageNeverPull"),
        ),
        (
            _spec(),
            BOUND,
            _pod(phase="Pending", ready=False, waiting="ContainerCreating"),
            ("Pending", "PodStarting"),
        ),
        (_spec(), BOUND, _pod(phase="Failed", ready=False), ("Pending", "PodRestarting")),
        (_spec(suspended=True), BOUND, None, ("Suspended", "Suspended")),
        (_spec(suspended=True), BOUND, _pod(), ("Suspended", "Stopping")),
    ],
)
def test_assess(spec: TroveNamespaceSpec, pvc: Any, pod: Any, expected: tuple[str, str]) -> None:
    assert builders.assess(spec, pvc, pod)[:2] == expected


def test_status_keeps_transition_time_while_unchanged() -> None:
    first = builders.build_status(
        phase="Ready", reason="PodReady", message="m", children=CHILDREN, pod_exists=True,
        generation=2, previous=None, now="2024-01-01T00:00:00Z",
    )  # fmt: skip
    again = builders.build_status(
        phase="Ready", reason="PodReady", message="m", children=CHILDREN, pod_exists=True,
        generation=3, previous=first, now="2024-01-02T00:00:00Z", last_activity="2024-01-02T00:00:00Z",
    )  # fmt: skip
    changed = builders.build_status(
        phase="Suspended", reason="Suspended", message="m", children=CHILDREN, pod_exists=False,
        generation=3, previous=again, now="2024-01-03T00:00:00Z",
    )  # fmt: skip
    assert again["conditions"][0]["lastTransitionTime"] == "2024-01-01T00:00:00Z"
    assert again["observedGeneration"] == 3
    assert again["lastActivity"] == "2024-01-02T00:00:00Z"
    assert changed["conditions"][0] == {
        "type": "Ready",
        "status": "False",
        "reason": "Suspended",
        "message": "m",
        "lastTransitionTime": "2024-01-03T00:00:00Z",
        "observedGeneration": 3,
    }
    assert changed["pod"] is None
