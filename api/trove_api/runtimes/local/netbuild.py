"""One local sandbox network, built and torn down whole: a network namespace, its slirp4netns and
the routing table that keeps it outbound-only.

The network namespace is created here, as root, so it belongs to the initial user namespace:
the sandbox (an unprivileged uid in a user namespace of its own) holds no capability over it and
cannot change its routes or addresses. Inside it there is ``lo`` and a ``tap0`` served by
``slirp4netns``, a user-mode NAT that opens ordinary host sockets for the sandbox's connections.
Because those host sockets would reach the host's loopback, link-local metadata and private
networks like any local program, the namespace's routing table refuses them before a packet
leaves (``prohibit`` routes answer EACCES at once): the blocked ranges below, slirp's gateway
10.0.2.2 (host loopback) and every address the host itself holds, with slirp's DNS forwarder
10.0.2.3 the one exception. IPv6 is off on tap0 (slirp runs without it), so there is no IPv6
path out at all. Abstract unix sockets are per network namespace, so the host's are out of
reach too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trove_api.runtimes.local.netroutes import host_addresses
from trove_api.runtimes.local.slirp import start_slirp

NETNS_DIR = Path("/run/netns")
# slirp4netns's control sockets (port forwards into a sandbox): root only.
SLIRP_API_DIR = Path("/run/trove-slirp")
SLIRP_GATEWAY = "10.0.2.2"
SLIRP_DNS = "10.0.2.3"
SLIRP_GUEST = "10.0.2.100"
SLIRP_SUBNET = "10.0.2.0/24"
DNS_ROUTE = f"{SLIRP_DNS}/32 dev tap0 scope link"  # the one way into slirp's /24
# RFC 1918, shared address space, link-local (cloud metadata), "this network", benchmarking,
# multicast and reserved: never a destination an agent's outbound traffic needs.
BLOCKED_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)


@dataclass
class Network:
    name: str
    slirp: subprocess.Popen[bytes] | None = None
    exit_fd: int | None = None  # our end of slirp's --exit-fd pipe: closing it stops slirp
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    base: frozenset[str] = frozenset()  # the prohibit routes every network has (set when built)
    egress: tuple[str, ...] = ()  # the user's blocked ranges its routing table holds now

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)

    @property
    def api_socket(self) -> Path:
        return SLIRP_API_DIR / f"{self.name}.sock"


def build_network(net: Network, allowed: Collection[str]) -> None:
    """Create ``net``'s namespace, start its slirp4netns and install the base routes, with the
    ``allowed`` ranges (normalised CIDRs) routed out. Blocking (subprocesses); slirp4netns dies
    with the calling thread (see ``start_slirp``)."""
    delete_netns(net.name)  # left by an earlier attempt under this name
    _run(["ip", "netns", "add", net.name])
    # tap0 is created after this and inherits "default": no IPv6 on it. lo keeps ::1.
    _run(
        ["nsenter", f"--net={net.path}", "sh", "-c",
         "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 && ip link set lo up"]
    )  # fmt: skip
    SLIRP_API_DIR.mkdir(mode=0o700, exist_ok=True)
    net.slirp, net.exit_fd = start_slirp(net.path, net.api_socket)
    # Configured exceptions (TROVE_SANDBOX_NETWORK_ALLOW) go through the gateway; a blocked
    # range they name exactly is left out, one they sit inside loses to them as less specific.
    routes = [f"route add {cidr} via {SLIRP_GATEWAY} dev tap0 onlink" for cidr in sorted(allowed)]
    routes += [f"route add prohibit {cidr}" for cidr in BLOCKED_V4 if cidr not in allowed]
    # The host's own addresses win over every exception (replace: even one naming them).
    hosts = host_addresses()
    routes += [f"route replace prohibit {cidr}" for cidr in hosts]
    # The guest's own /24 is on-link: refuse all of it but the DNS forwarder. The gateway
    # stays the default route's next hop (resolved on tap0, not through these routes).
    routes += [
        "route add prohibit 10.0.2.0/25",
        "route add prohibit 10.0.2.128/25",
        f"route add {DNS_ROUTE}",
    ]
    run_ip_batch(net, routes)
    own = {"10.0.2.0/25", "10.0.2.128/25", *hosts}
    net.base = frozenset(own | {cidr for cidr in BLOCKED_V4 if cidr not in allowed})
    net.egress = ()


def run_ip_batch(net: Network, lines: Sequence[str]) -> None:
    """Run ``ip`` commands (``route add ...``) inside ``net``'s namespace, all or an error."""
    _run(["nsenter", f"--net={net.path}", "ip", "-batch", "-"], stdin="\n".join(lines) + "\n")


def teardown_network(net: Network) -> None:
    """Stop ``net``'s slirp4netns and delete its namespace and API socket."""
    if net.exit_fd is not None:
        with contextlib.suppress(OSError):
            os.close(net.exit_fd)
        net.exit_fd = None
    if net.slirp is not None:
        if net.slirp.poll() is None:
            net.slirp.terminate()
            try:
                net.slirp.wait(timeout=2)
            except subprocess.TimeoutExpired:
                net.slirp.kill()
                net.slirp.wait()
        net.slirp = None
    net.api_socket.unlink(missing_ok=True)
    delete_netns(net.name)


def delete_netns(name: str) -> None:
    if (NETNS_DIR / name).exists():
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10, check=False)


def _run(argv: list[str], stdin: str | None = None) -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {result.stderr.strip()}")
