"""E2B's egress rules (``allow_out`` / ``deny_out``) turned into the set of ranges a sandbox may
not reach: pure, so the rule arithmetic is tested without a network.

E2B's semantics: ``deny_out`` ranges are blocked and ``allow_out`` wins over ``deny_out``;
``allow_internet_access=False`` is ``deny_out=["0.0.0.0/0"]``. An ``allow_out`` only carves
holes in what ``deny_out`` blocks: it never opens what Trove's own isolation refuses (the host,
private and metadata ranges). Trove enforces addresses only, so a domain name is refused.

DNS: the sandbox's resolver (slirp's forwarder locally, the cluster DNS on Kubernetes) sends
what it is asked to the outside, so it is a way out like any address. It is cut whenever
``deny_out`` covers all of IPv4 (``allow_internet_access=False``, ``ALL_TRAFFIC``), whatever
``allow_out`` carves out: an allow-list sandbox reaches its allowed addresses by address (as on
E2B, where such a sandbox's resolver 8.8.8.8 is blocked too unless allowed). Narrower denials
leave DNS as it was.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ALL_IPV4 = "0.0.0.0/0"
# Per list in a request, and of the computed set: each blocked range is a route (local) or an
# ``except`` entry of a NetworkPolicy (Kubernetes), and both want a bounded count.
MAX_ENTRIES = 256
MAX_BLOCKED = 1024


class EgressRuleError(ValueError):
    """A rule Trove cannot enforce (a domain name, too many ranges): the message says which."""


@dataclass(frozen=True)
class EgressRules:
    """What the user asked for, kept as given (normalised) so ``get_info`` can show it back."""

    allow_out: tuple[str, ...] = ()
    deny_out: tuple[str, ...] = ()

    @property
    def blocked(self) -> list[str]:
        return blocked_ranges(self.deny_out, self.allow_out)

    @property
    def dns(self) -> bool:
        """Whether the sandbox keeps its resolver (see the module's docstring)."""
        return dns_allowed(self.deny_out, self.allow_out)

    def as_json(self) -> dict[str, list[str]]:
        return {"allowOut": list(self.allow_out), "denyOut": list(self.deny_out)}


def parse_network(value: str) -> IPNetwork:
    """A CIDR or a bare IP (a host route). Host bits set are forgiven (``10.0.0.1/8``)."""
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise EgressRuleError(
            f"{value[:100]!r} is not an IP address or CIDR: Trove enforces egress rules by address "
            "only (domain names are not supported)"
        ) from None


def parse_list(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EgressRuleError(f"{field} must be a list of CIDRs or IP addresses")
    if len(value) > MAX_ENTRIES:
        raise EgressRuleError(f"{field} has {len(value)} entries; the limit is {MAX_ENTRIES}")
    return tuple(dict.fromkeys(str(parse_network(v)) for v in value))


def rules_from(body: Any, allow_internet_access: Any = None) -> EgressRules:
    """The rules of an update body (``allowOut``/``denyOut``) or a create's ``network``, with
    ``allow_internet_access=False`` adding ``0.0.0.0/0`` to the denied ranges."""
    if not isinstance(body, dict):
        raise EgressRuleError("network must be an object")
    if body.get("rules"):
        raise EgressRuleError("per-host transform rules are not supported by Trove")
    if body.get("egressProxy") is not None:
        raise EgressRuleError("an egress proxy is not supported by Trove")
    if body.get("dnsServers") is not None:
        raise EgressRuleError("choosing DNS servers is not supported by Trove")
    allow = parse_list(body.get("allowOut"), "allowOut")
    deny = parse_list(body.get("denyOut"), "denyOut")
    if allow_internet_access is False and ALL_IPV4 not in deny:
        deny = (*deny, ALL_IPV4)
    rules = EgressRules(allow_out=allow, deny_out=deny)
    rules.blocked  # noqa: B018 -- computed once here so an oversized set is refused at once
    return rules


def dns_allowed(deny: Iterable[str], allow: Iterable[str] = ()) -> bool:
    """False when ``deny`` covers all of IPv4 and ``allow`` does not give all of it back."""
    whole = parse_network(ALL_IPV4)
    denied = _collapse(parse_network(c) for c in deny)
    return whole not in denied or whole in _collapse(parse_network(c) for c in allow)


def blocked_ranges(deny: Sequence[str], allow: Iterable[str]) -> list[str]:
    """The ranges ``deny`` covers that no ``allow`` range covers, as few disjoint networks as
    the subtraction gives, sorted (IPv4 first). ``EgressRuleError`` past ``MAX_BLOCKED``."""
    # E2B's "all traffic" (its SDK's ``ALL_TRAFFIC``) is 0.0.0.0/0; Trove reads it as IPv6 too,
    # so allow_internet_access=False leaves no way out on a dual-stack cluster either.
    deny = [*deny, *(["::/0"] if ALL_IPV4 in {str(parse_network(c)) for c in deny} else [])]
    denied = _collapse(parse_network(c) for c in deny)
    allowed = _collapse(parse_network(c) for c in allow)
    result: list[IPNetwork] = []
    for net in denied:
        pieces = [net]
        for hole in allowed:
            pieces = list(_subtract(pieces, hole))
            if len(pieces) > MAX_BLOCKED:
                raise _too_many()
        result.extend(pieces)
        if len(result) > MAX_BLOCKED:
            raise _too_many()
    return [str(n) for n in sorted(result, key=lambda n: (n.version, n.network_address, n.prefixlen))]


def _collapse(nets: Iterable[IPNetwork]) -> list[IPNetwork]:
    by_family: dict[int, list[Any]] = {4: [], 6: []}
    for net in nets:
        by_family[net.version].append(net)
    return [*ipaddress.collapse_addresses(by_family[4]), *ipaddress.collapse_addresses(by_family[6])]


def _subtract(pieces: Sequence[IPNetwork], hole: IPNetwork) -> Iterable[IPNetwork]:
    for piece in pieces:
        if piece.version != hole.version or not piece.overlaps(hole):
            yield piece
        elif piece.prefixlen < hole.prefixlen:  # the hole sits inside: keep what is around it
            yield from piece.address_exclude(hole)  # type: ignore[arg-type]
        # else: the hole covers the whole piece, nothing of it stays blocked


def _too_many() -> EgressRuleError:
    return EgressRuleError(
        f"these rules block more than {MAX_BLOCKED} separate ranges once allow_out is carved out "
        "of deny_out; use fewer, wider ranges"
    )
