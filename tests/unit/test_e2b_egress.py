"""E2B's egress rules as the set of ranges a sandbox may not reach (pure), and the route lines
that move a local sandbox's routing table from one set to another."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trove_api.e2b.egress import (
    MAX_BLOCKED,
    EgressRuleError,
    EgressRules,
    blocked_ranges,
    parse_list,
    rules_from,
)
from trove_api.runtimes.local.netroutes import egress_route_lines, routable

# Small networks inside 10.0.0.0/16, so random rules overlap often.
_nets = st.builds(
    lambda address, prefix: str(
        ipaddress.ip_network(f"10.0.{address >> 8}.{address & 255}/{prefix}", strict=False)
    ),
    st.integers(0, 0xFFFF),
    st.integers(16, 32),
)
_addresses = st.integers(0, 0xFFFF).map(lambda a: ipaddress.ip_address(f"10.0.{a >> 8}.{a & 255}"))


def _covers(cidrs: list[str], address: ipaddress.IPv4Address) -> bool:
    return any(address in ipaddress.ip_network(c) for c in cidrs)


@settings(max_examples=300, deadline=None)
@given(
    deny=st.lists(_nets, max_size=6),
    allow=st.lists(_nets, max_size=6),
    probe=st.lists(_addresses, max_size=20),
)
def test_an_address_is_blocked_when_denied_and_not_allowed(
    deny: list[str], allow: list[str], probe: list[ipaddress.IPv4Address]
) -> None:
    blocked = blocked_ranges(deny, allow)
    for address in probe:
        assert _covers(blocked, address) == (_covers(deny, address) and not _covers(allow, address))
    networks = [ipaddress.ip_network(c) for c in blocked]
    # Disjoint: each address is refused by one route, not a stack of them.
    assert all(not a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])


def test_allow_out_wins_over_deny_out() -> None:
    assert blocked_ranges(["203.0.113.0/24"], ["203.0.113.0/25"]) == ["203.0.113.128/25"]
    assert blocked_ranges(["203.0.113.7"], ["203.0.113.0/24"]) == []
    assert blocked_ranges(["203.0.113.0/24"], ["198.51.100.1"]) == ["203.0.113.0/24"]


def test_all_traffic_means_both_families() -> None:
    assert blocked_ranges(["0.0.0.0/0"], []) == ["0.0.0.0/0", "::/0"]
    assert rules_from({}, allow_internet_access=False) == EgressRules(deny_out=("0.0.0.0/0",))
    assert rules_from({}, allow_internet_access=True).blocked == []


def test_bare_ips_and_host_bits_are_normalised() -> None:
    assert parse_list(["10.1.2.3", "10.1.2.3/8", "::1"], "denyOut") == (
        "10.1.2.3/32",
        "10.0.0.0/8",
        "::1/128",
    )


@pytest.mark.parametrize(
    "body",
    [
        {"denyOut": ["example.com"]},
        {"allowOut": ["api.example.com"], "denyOut": ["0.0.0.0/0"]},
        {"denyOut": "10.0.0.0/8"},
        {"denyOut": [5]},
        {"rules": {"example.com": [{}]}},
        {"egressProxy": {"address": "proxy:3128"}},
        {"dnsServers": ["1.1.1.1"]},
        {"denyOut": ["10.0.0.0/8"] * 300},
    ],
)
def test_what_trove_cannot_enforce_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(EgressRuleError):
        rules_from(body)


def test_domain_names_are_named_in_the_error() -> None:
    with pytest.raises(EgressRuleError, match=r"'example\.com'.*domain names are not supported"):
        rules_from({"denyOut": ["example.com"]})


def test_the_blocked_set_is_capped() -> None:
    # Every other /32 of a /20 allowed: the subtraction would leave 2048 ranges.
    allow = [f"10.0.{i >> 8}.{i & 255}" for i in range(0, 4096, 2)][:256]
    assert len(blocked_ranges(["10.0.0.0/20"], allow)) <= MAX_BLOCKED
    many = [f"10.{i}.0.0/16" for i in range(0, 250)]
    holes = [f"10.{i}.0.1" for i in range(0, 250)]
    with pytest.raises(EgressRuleError, match="separate ranges"):
        blocked_ranges(many, holes)


def test_routable_keeps_ipv4_and_splits_the_default_route() -> None:
    assert routable(["0.0.0.0/0", "::/0", "203.0.113.0/24"], "10.0.2.0/24") == [
        "0.0.0.0/1",
        "128.0.0.0/1",
        "203.0.113.0/24",
    ]
    # slirp's own /24 (gateway, DNS forwarder, guest) is plumbing, never a user route
    assert routable(["10.0.2.0/24", "10.0.2.3/32", "10.0.0.0/16"], "10.0.2.0/24") == ["10.0.0.0/16"]


def test_route_lines_add_and_take_back_only_what_the_user_set() -> None:
    base = {"10.0.0.0/8", "192.0.2.1/32"}
    via = {"192.168.77.0/24"}
    lines = egress_route_lines(
        ["203.0.113.0/24", "10.0.0.0/8", "192.168.77.0/24", "198.51.100.0/24"],
        ["198.51.100.0/24", "0.0.0.0/1"],
        base=base,
        via_gateway=via,
        gateway="10.0.2.2",
    )
    assert lines == [
        "route del 203.0.113.0/24",
        # a base range stays refused; a configured exception gets its route back
        "route replace 192.168.77.0/24 via 10.0.2.2 dev tap0 onlink",
        "route replace prohibit 0.0.0.0/1",
    ]
    assert egress_route_lines([], [], base=base, via_gateway=via, gateway="10.0.2.2") == []


def test_denying_all_of_ipv4_cuts_dns_whatever_allow_out_carves() -> None:
    """A resolver forwards any query out: under deny-all it is a way out like any address."""
    assert not rules_from({}, allow_internet_access=False).dns
    assert not rules_from({"denyOut": ["0.0.0.0/0"], "allowOut": ["203.0.113.0/24"]}).dns
    assert not rules_from({"denyOut": ["0.0.0.0/1", "128.0.0.0/1"]}).dns  # all of it, in halves
    assert rules_from({"denyOut": ["203.0.113.0/24", "10.0.0.0/8"]}).dns  # narrower: DNS stays
    assert rules_from({}).dns
    # Everything given back: nothing is denied, the resolver included.
    assert rules_from({"denyOut": ["0.0.0.0/0"], "allowOut": ["0.0.0.0/0", "::/0"]}).dns


def test_route_lines_give_the_dns_forwarder_its_route_back() -> None:
    forwarder = {"10.0.2.3/32": "10.0.2.3/32 dev tap0 scope link"}
    cut = egress_route_lines(
        [], ["0.0.0.0/1", "10.0.2.3/32"], base=set(), via_gateway=set(), gateway="10.0.2.2", restore=forwarder
    )
    assert cut == ["route replace prohibit 0.0.0.0/1", "route replace prohibit 10.0.2.3/32"]
    lifted = egress_route_lines(
        ["0.0.0.0/1", "10.0.2.3/32"], [], base=set(), via_gateway=set(), gateway="10.0.2.2", restore=forwarder
    )
    assert lifted == ["route del 0.0.0.0/1", "route replace 10.0.2.3/32 dev tap0 scope link"]


def test_deny_all_covers_the_servers_configured_exceptions_too() -> None:
    """Their gateway routes are more specific than any user range covering them: left alone,
    TROVE_SANDBOX_NETWORK_ALLOW would stay open under deny-all."""
    exceptions = {"10.20.0.0/16", "192.168.77.0/24"}
    assert routable(["0.0.0.0/0"], "10.0.2.0/24", exceptions) == [
        "0.0.0.0/1",
        "128.0.0.0/1",
        "10.20.0.0/16",
        "192.168.77.0/24",
    ]
    # Only an exception covered whole: a narrower denial inside one is already more specific.
    assert routable(["10.20.5.0/24", "192.168.0.0/16"], "10.0.2.0/24", exceptions) == [
        "10.20.5.0/24",
        "192.168.0.0/16",
        "192.168.77.0/24",
    ]
    # Lifted, an exception gets its gateway route back (not a plain delete).
    lines = egress_route_lines(
        ["0.0.0.0/1", "10.20.0.0/16"], [], base=set(), via_gateway=exceptions, gateway="10.0.2.2"
    )
    assert lines == ["route del 0.0.0.0/1", "route replace 10.20.0.0/16 via 10.0.2.2 dev tap0 onlink"]
