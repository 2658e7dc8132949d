"""The routing-table side of a local sandbox network: the host's addresses to refuse, and the
``ip -batch`` lines that move a namespace from one set of user egress rules (E2B's
``update_network``) to another.

User rules only add ``prohibit`` routes on top of the base ones ``netbuild`` installs: a range
the base already refuses stays refused when a rule naming it goes away, and an exception the
server's configuration routes through the gateway gets that route back.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
from collections.abc import Collection, Mapping, Sequence


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses but loopback, as /32s: slirp would connect to them from the
    host, reaching every service bound to 0.0.0.0 (a public IP, a bridge, a VPN).

    Read when a namespace's network is built; one built before an address was added keeps
    missing it until rebuilt (idle stop or restart).
    """
    result = subprocess.run(
        ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=10, check=False
    )
    found: set[str] = set()
    with contextlib.suppress(ValueError):
        for link in json.loads(result.stdout or "[]"):
            for info in link.get("addr_info", []):
                address = ipaddress.ip_address(info.get("local", ""))
                if not address.is_loopback:
                    found.add(f"{address}/32")
    return sorted(found)


def routable(blocked: Sequence[str], plumbing: str, exceptions: Collection[str] = ()) -> list[str]:
    """The IPv4 ranges of ``blocked`` as prohibit routes can hold them: IPv6 has no path out of a
    local sandbox at all, and a /0 is split in halves, so the default route (slirp's gateway,
    which DNS and the gateway's own address need) is never replaced and comes back intact.
    Ranges inside ``plumbing`` (slirp's own /24: its gateway, DNS forwarder and the guest) are
    left out: all of it but the DNS forwarder is refused already, and replacing its link or
    DNS route would leave the namespace without a way out once the rule is lifted.
    ``exceptions`` (the server's configured ranges, routed through the gateway) that a blocked
    range covers whole are refused too: their routes are more specific, so a wider prohibit
    alone would leave them open under deny-all."""
    routes: list[str] = []
    own = ipaddress.ip_network(plumbing)
    for cidr in blocked:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version != 4 or net.subnet_of(own):  # type: ignore[arg-type]
            continue
        routes += [str(half) for half in net.subnets(1)] if net.prefixlen == 0 else [str(net)]
    refused = [ipaddress.ip_network(cidr) for cidr in routes]
    for cidr in sorted(exceptions):
        hole = ipaddress.ip_network(cidr, strict=False)
        if hole.version == 4 and any(hole.subnet_of(net) for net in refused):  # type: ignore[arg-type]
            routes.append(str(hole))
    return list(dict.fromkeys(routes))


def egress_route_lines(
    applied: Sequence[str],
    wanted: Sequence[str],
    *,
    base: Collection[str],
    via_gateway: Collection[str],
    gateway: str,
    restore: Mapping[str, str] | None = None,
) -> list[str]:
    """``ip -batch`` lines taking a namespace from the user ranges ``applied`` to ``wanted``
    (both as ``routable`` gives them). ``base``: ranges refused whatever the user says;
    ``via_gateway``: the configured exceptions, routed through slirp's gateway; ``restore``:
    the route a range gets back when it is no longer refused (slirp's DNS forwarder)."""
    lines: list[str] = []
    for cidr in applied:
        if cidr in wanted or cidr in base:
            continue
        if restore and cidr in restore:
            lines.append(f"route replace {restore[cidr]}")
        elif cidr in via_gateway:
            lines.append(f"route replace {cidr} via {gateway} dev tap0 onlink")
        else:
            lines.append(f"route del {cidr}")
    lines += [f"route replace prohibit {cidr}" for cidr in wanted if cidr not in applied]
    return lines
