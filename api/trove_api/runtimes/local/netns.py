"""Outbound-only networking for local sandboxes: a network namespace per Trove namespace.

Each namespace that execs gets a network namespace created here, as root, so it belongs to the
initial user namespace: the sandbox (an unprivileged uid in a user namespace of its own) holds no
capability over it and cannot change its routes or addresses. Inside it there is ``lo`` and a
``tap0`` served by ``slirp4netns``, a user-mode NAT that opens ordinary host sockets for the
sandbox's connections. Because those host sockets would reach the host's loopback, link-local
metadata and private networks like any local program, the namespace's routing table refuses
them before a packet leaves (``prohibit`` routes answer EACCES at once): the blocked ranges
below, slirp's gateway 10.0.2.2 (host loopback) and every address the host itself holds, with
slirp's DNS forwarder 10.0.2.3 the one exception. IPv6 is off on tap0 (slirp runs without it),
so there is no IPv6 path out at all. Abstract unix sockets are per network namespace, so the
host's are out of reach too.

slirp4netns dies with the server (``--exit-fd``), is restarted when found dead, and stopped
when its namespace has been idle. A few networks are built ahead (``spares``, in threads) so a
new namespace's first call takes one instead of waiting for ``ip`` and slirp4netns; nothing in a
network depends on the namespace it goes to (routes and the slirp API socket are per network).
An exec never waits on it: if slirp cannot be started the exec runs in the same namespace
without a way out, and the failure is logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import itertools
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trove_api.runtimes.local.cgroups import owner_name, start_time
from trove_api.runtimes.local.netroutes import egress_route_lines, host_addresses, routable
from trove_api.runtimes.local.slirp import start_slirp

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
# slirp4netns's control sockets (port forwards into a sandbox): root only.
SLIRP_API_DIR = Path("/run/trove-slirp")
_PREFIX = "trove-"
SLIRP_GATEWAY = "10.0.2.2"
SLIRP_DNS = "10.0.2.3"
SLIRP_GUEST = "10.0.2.100"
SLIRP_SUBNET = "10.0.2.0/24"
_DNS_ROUTE = f"{SLIRP_DNS}/32 dev tap0 scope link"  # the one way into slirp's /24
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
_IDLE_S = 600.0
_MAX_LIVE = 64
# After a failed build, execs run without network for this long before the next attempt, so a
# broken slirp4netns costs one wait, not one per exec.
_RETRY_AFTER_S = 30.0
# Networks kept built ahead for new namespaces: each is a slirp4netns of ~3 MB.
SPARES = 2
_CLOSE_WAIT_S = 15.0
# Spares' names count per process, not per instance: two runtimes in one process (the server's
# and a maintenance one) must never build, or delete, the other's spare under the same name.
_SPARE_SERIAL = itertools.count()


@dataclass
class _Net:
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


def unavailable_reason() -> str | None:
    """Why outbound sandbox networking cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the server is not running as root (it must create network namespaces)"
    for tool in ("slirp4netns", "ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install slirp4netns iproute2 util-linux)"
    return None


class SandboxNetworks:
    def __init__(
        self,
        allow: Sequence[str] = (),
        idle_s: float = _IDLE_S,
        max_live: int = _MAX_LIVE,
        spares: int = 0,
    ) -> None:
        self.allow = list(allow)
        self.idle_s = idle_s
        self.max_live = max_live
        self.spares = spares
        self.owner = owner_name(os.getpid())
        self._lock = threading.Lock()
        self._built = threading.Condition(self._lock)  # a spare's build ended
        self._nets: dict[str, _Net] = {}
        # User egress rules per key (E2B's update_network), applied to each network it gets.
        self._egress: dict[str, tuple[str, ...]] = {}
        self._spare_nets: list[_Net] = []
        self._building = 0
        # Bumped by close: a spare whose build started before is torn down, not kept.
        self._generation = 0
        self._builder: threading.Thread | None = None
        self._filling = False  # spares wanted: from the first acquire until close
        self._retry_at = 0.0
        self.spares_taken = 0  # first calls served by a spare (tests read it)

    # -- lifecycle --------------------------------------------------------------------------

    def sweep(self) -> None:
        """Delete the network namespaces of servers that are no longer running."""
        if not NETNS_DIR.is_dir():
            return
        for entry in NETNS_DIR.iterdir():
            parts = entry.name.split("-")
            if not entry.name.startswith(_PREFIX) or len(parts) != 4:
                continue
            pid, started = parts[1], parts[2]
            if not (pid.isdigit() and started.isdigit()):
                continue
            if start_time(int(pid)) != int(started):
                _delete_netns(entry.name)
                (SLIRP_API_DIR / f"{entry.name}.sock").unlink(missing_ok=True)

    def startup_check(self) -> bool:
        """Sweep dead servers' namespaces and build one network, so a host where slirp4netns
        cannot work says so at start-up rather than at the first exec."""
        self.sweep()
        probe = f".probe-{os.getpid()}"
        working = self._acquire(probe, refill=False) is not None
        self.close()
        if working:
            with self._lock:
                self._refill()
        return working

    def acquire(self, key: str) -> str | None:
        """The netns path an exec for ``key`` enters (slirp running), or None: no network.

        Blocking (subprocesses); call it from a thread and pair it with ``release``.
        """
        return self._acquire(key, refill=True)

    def _acquire(self, key: str, *, refill: bool) -> str | None:
        with self._lock:
            self._stop_idle(exclude=key)
            net = self._nets.get(key)
            if net is not None and (net.slirp is None or net.slirp.poll() is not None):
                log.warning("slirp4netns for %s is not running; rebuilding its network", key)
                self._teardown(net)
                net = None
            if net is None:
                net = self._take_spare()
                if net is not None:
                    self._nets[key] = net
                if refill:
                    self._refill()
            if net is None:
                if time.monotonic() < self._retry_at:
                    return None
                net = _Net(self._name(key))
                try:
                    self._build(net)
                except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                    log.error(
                        "cannot give %s outbound networking (%s); execs run without network, "
                        "next attempt in %.0f s",
                        key,
                        exc,
                        _RETRY_AFTER_S,
                    )
                    self._teardown(net)
                    self._retry_at = time.monotonic() + _RETRY_AFTER_S
                    return None
                self._nets[key] = net
            try:
                self._apply_egress(key, net)
            except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                # Never a network without the rules asked for: the exec runs without one.
                log.error("cannot apply %s's egress rules (%s); it runs without network", key, exc)
                self._teardown(self._nets.pop(key))
                return None
            net.in_use += 1
            net.last_used = time.monotonic()
            return net.path

    def set_egress(self, key: str, blocked: Sequence[str], *, dns: bool = True) -> None:
        """Refuse ``key``'s traffic to ``blocked`` (and to slirp's DNS forwarder unless ``dns``)
        from now on: at once in a network it holds, and in every network it gets later (a
        rebuild, a spare). Blocking (subprocesses)."""
        with self._lock:
            # The forwarder resolves anything for anyone inside: a way out past every route.
            cut_dns = () if dns else (f"{SLIRP_DNS}/32",)
            wanted = (*routable(blocked, SLIRP_SUBNET, self._allowed()), *cut_dns)
            if wanted:
                self._egress[key] = wanted
            else:
                self._egress.pop(key, None)
            net = self._nets.get(key)
            if net is not None:
                try:
                    self._apply_egress(key, net)
                except (OSError, subprocess.SubprocessError, RuntimeError):
                    self._teardown(self._nets.pop(key))  # rebuilt, with the rules, when next used
                    raise

    def _apply_egress(self, key: str, net: _Net) -> None:
        wanted = self._egress.get(key, ())
        if net.egress == wanted:
            return
        lines = egress_route_lines(
            net.egress,
            wanted,
            base=net.base,
            via_gateway=self._allowed(),
            gateway=SLIRP_GATEWAY,
            restore={f"{SLIRP_DNS}/32": _DNS_ROUTE},
        )
        if lines:
            _run(["nsenter", f"--net={net.path}", "ip", "-batch", "-"], stdin="\n".join(lines) + "\n")
        net.egress = wanted

    def rekey(self, old: str, new: str) -> bool:
        """Hand ``old``'s network to ``new`` (a spare sandbox claimed), with ``new``'s egress
        rules applied; False, and ``old``'s network torn down, if that cannot be done."""
        with self._lock:
            net = self._nets.pop(old, None)
            if net is None or new in self._nets:
                if net is not None:
                    self._teardown(net)
                return False
            try:
                self._apply_egress(new, net)
            except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                log.error("cannot apply %s's egress rules (%s) to a spare's network", new, exc)
                self._teardown(net)
                return False
            self._nets[new] = net
            return True

    def drop(self, key: str) -> None:
        """Tear down ``key``'s network (a spare sandbox's, never claimed)."""
        with self._lock:
            net = self._nets.pop(key, None)
            if net is not None:
                self._teardown(net)

    def release(self, key: str) -> None:
        with self._lock:
            net = self._nets.get(key)
            if net is not None:
                net.in_use = max(0, net.in_use - 1)
                net.last_used = time.monotonic()

    def slirp_running(self, key: str) -> bool:
        """Whether ``key``'s network still has its slirp4netns (without it, no way out)."""
        with self._lock:
            net = self._nets.get(key)
            return net is not None and net.slirp is not None and net.slirp.poll() is None

    def slirp_pid(self, key: str) -> int | None:
        with self._lock:
            net = self._nets.get(key)
            return net.slirp.pid if net is not None and net.slirp is not None else None

    def api_socket(self, key: str) -> Path | None:
        """slirp4netns's API socket for ``key`` (``add_hostfwd`` forwards a host port in)."""
        with self._lock:
            net = self._nets.get(key)
            return net.api_socket if net is not None else None

    def ready_spares(self) -> list[str]:
        """The netns paths of the spares built and waiting for a namespace."""
        with self._lock:
            return [net.path for net in self._spare_nets]

    def close(self) -> None:
        """Tear down every network, the spares too (waiting for those being built)."""
        with self._lock:
            self._generation += 1
            self._filling = False
            self._built.wait_for(lambda: self._building == 0, timeout=_CLOSE_WAIT_S)
            for net in [*self._nets.values(), *self._spare_nets]:
                self._teardown(net)
            self._nets.clear()
            self._spare_nets.clear()

    # -- internals --------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return f"{_PREFIX}{self.owner.removeprefix('srv-')}-{digest}"

    def _take_spare(self) -> _Net | None:
        while self._spare_nets:
            net = self._spare_nets.pop(0)
            if net.slirp is not None and net.slirp.poll() is None:
                self.spares_taken += 1
                return net
            self._teardown(net)  # its slirp4netns died while it waited
        return None

    def _refill(self) -> None:
        """Have the builder keep ``spares`` networks ready (lock held)."""
        if self.spares <= 0:
            return
        self._filling = True
        if self._builder is None:
            # One long-lived thread: slirp4netns dies with the thread that started it (its
            # parent-death signal follows the thread), so a short-lived one would take it along.
            self._builder = threading.Thread(
                target=self._build_spares, name="trove-netns-spares", daemon=True
            )
            self._builder.start()
        self._built.notify_all()

    def _spare_wanted(self) -> bool:
        return (
            self._filling
            and time.monotonic() >= self._retry_at
            and len(self._spare_nets) + self._building < self.spares
        )

    def _build_spares(self) -> None:
        while True:
            with self._lock:
                self._built.wait_for(self._spare_wanted)
                self._building += 1
                generation = self._generation
                net = _Net(f"{_PREFIX}{self.owner.removeprefix('srv-')}-spare{next(_SPARE_SERIAL)}")
            built = False
            try:
                self._build(net)
                built = True
            except Exception as exc:  # the thread must survive: logged, and builds pause
                log.warning("building a spare sandbox network failed: %s", exc)
            with self._lock:
                try:
                    if built and generation == self._generation:
                        self._spare_nets.append(net)
                    else:
                        if not built:
                            self._retry_at = time.monotonic() + _RETRY_AFTER_S
                        self._teardown(net)
                finally:
                    self._building -= 1
                    self._built.notify_all()

    def _stop_idle(self, exclude: str) -> None:
        """Stop networks idle for ``idle_s``, and the least recently used idle ones beyond
        ``max_live`` (each is a slirp4netns process of ~3 MB)."""
        now = time.monotonic()
        idle = sorted(
            (net.last_used, key) for key, net in self._nets.items() if key != exclude and net.in_use == 0
        )
        excess = len(self._nets) - self.max_live + 1
        for position, (last_used, key) in enumerate(idle):
            if position < excess or now - last_used > self.idle_s:
                self._teardown(self._nets.pop(key))

    def _build(self, net: _Net) -> None:
        _delete_netns(net.name)  # left by an earlier attempt under this name
        _run(["ip", "netns", "add", net.name])
        # tap0 is created after this and inherits "default": no IPv6 on it. lo keeps ::1.
        _run(
            ["nsenter", f"--net={net.path}", "sh", "-c",
             "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 && ip link set lo up"]
        )  # fmt: skip
        self._start_slirp(net)
        # Configured exceptions (TROVE_SANDBOX_NETWORK_ALLOW) go through the gateway; a blocked
        # range they name exactly is left out, one they sit inside loses to them as less specific.
        allowed = self._allowed()
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
            f"route add {_DNS_ROUTE}",
        ]
        _run(["nsenter", f"--net={net.path}", "ip", "-batch", "-"], stdin="\n".join(routes) + "\n")
        own = {"10.0.2.0/25", "10.0.2.128/25", *hosts}
        net.base = frozenset(own | {cidr for cidr in BLOCKED_V4 if cidr not in allowed})
        net.egress = ()

    def _allowed(self) -> set[str]:
        return {str(ipaddress.ip_network(cidr, strict=False)) for cidr in self.allow}

    def _start_slirp(self, net: _Net) -> None:
        SLIRP_API_DIR.mkdir(mode=0o700, exist_ok=True)
        net.slirp, net.exit_fd = start_slirp(net.path, net.api_socket)

    def _teardown(self, net: _Net) -> None:
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
        _delete_netns(net.name)


def _run(argv: list[str], stdin: str | None = None) -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {result.stderr.strip()}")


def _delete_netns(name: str) -> None:
    if (NETNS_DIR / name).exists():
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10, check=False)
