"""A TroveNamespace's ``egressBlocked`` (E2B's update_network) rendered into its NetworkPolicy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from trove_api.e2b.egress import rules_from
from trove_core.crd import child_names
from trove_operator import builders
from trove_operator.spec import TroveNamespaceSpec

NAME = "alice-0123456789ab"
CLUSTER = ["10.244.0.0/16", "169.254.0.0/16"]
ROOT = Path(__file__).resolve().parents[2]


def _egress(**extra: Any) -> list[dict[str, Any]]:
    spec = TroveNamespaceSpec.model_validate({"workspaceId": "ws-1", "namespace": "alice", **extra})
    policy: list[dict[str, Any]] = builders.build_network_policy(NAME, child_names(NAME), spec, CLUSTER)[
        "spec"
    ]["egress"]
    return policy


def _blocks(egress: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {
        peer["ipBlock"]["cidr"]: peer["ipBlock"].get("except", [])
        for rule in egress
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    }


def test_blocked_ranges_join_the_cluster_ranges_in_the_excepts() -> None:
    blocks = _blocks(_egress(egressBlocked=["203.0.113.0/24", "2001:db8::/32", "10.244.0.0/16"]))
    assert blocks == {
        "0.0.0.0/0": ["10.244.0.0/16", "169.254.0.0/16", "203.0.113.0/24"],
        "::/0": ["2001:db8::/32"],
    }


def test_without_blocked_ranges_the_policy_is_unchanged() -> None:
    assert _egress(egressBlocked=[]) == _egress()
    assert _egress(egress="all") == [{}]


def test_all_egress_becomes_blocks_once_ranges_are_refused() -> None:
    assert _blocks(_egress(egress="all", egressBlocked=["203.0.113.0/24"])) == {
        "0.0.0.0/0": ["203.0.113.0/24"],
        "::/0": [],
    }


def test_everything_blocked_leaves_no_egress_at_all() -> None:
    assert _egress(egressBlocked=["0.0.0.0/0", "::/0"]) == []
    assert _egress(egress="all", egressBlocked=["0.0.0.0/0", "::/0"]) == []
    # One family blocked whole: its block is gone (an except must lie strictly inside it).
    assert _blocks(_egress(egressBlocked=["0.0.0.0/0"])) == {"::/0": []}


def _resolver_open(egress: list[dict[str, Any]]) -> bool:
    return any(
        peer.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}
        for rule in egress
        for peer in rule.get("to", [])
    )


def _from_e2b(egress: str = "internet", **network: Any) -> list[dict[str, Any]]:
    """The policy for E2B rules as the Kubernetes runtime writes them into the spec."""
    rules = rules_from(network)
    return _egress(egress=egress, egressBlocked=rules.blocked, egressDns=rules.dns)


@pytest.mark.parametrize("mode", ["internet", "all"])
def test_deny_all_with_an_allow_list_cuts_dns_as_a_local_sandbox_does(mode: str) -> None:
    allow_list = _from_e2b(mode, denyOut=["0.0.0.0/0"], allowOut=["203.0.113.0/24"])
    assert "203.0.113.0/24" not in _blocks(allow_list)["0.0.0.0/0"]  # the hole is open
    assert not _resolver_open(allow_list)
    assert _from_e2b(mode, denyOut=["0.0.0.0/0"]) == []  # nothing at all, DNS included
    assert _resolver_open(_from_e2b(mode, denyOut=["203.0.113.0/24"]))  # narrower: DNS stays
    assert _resolver_open(_egress())  # and by default


def test_none_stays_none() -> None:
    assert _egress(egress="none", egressBlocked=["203.0.113.0/24"]) == []


def test_the_spec_takes_only_networks() -> None:
    with pytest.raises(ValidationError):
        _egress(egressBlocked=["example.com"])


def test_the_crd_declares_the_field_in_both_copies() -> None:
    for path in (ROOT / "crds", ROOT / "charts/trove/crds"):
        crd = yaml.safe_load((path / "trovenamespaces.trove.dev.yaml").read_text())
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert spec["properties"]["egressBlocked"]["items"]["type"] == "string"
        dns = spec["properties"]["egressDns"]
        assert (dns["type"], dns["default"]) == ("boolean", True)
