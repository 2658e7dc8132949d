"""Outbound-only networking for local sandboxes: a network namespace per Trove namespace.

Each namespace that execs gets a network of its own, built by ``netbuild`` (which says what is
inside it and why nothing of the host is reachable from it); this module hands networks out by
key, keeps each key's egress rules (E2B's ``update_network``) applied to the network it holds,
and stops the ones not used.

slirp4netns dies with the server (``--exit-fd``), is restarted when found dead, and stopped
when its namespace has been idle. A few networks are built ahead (``spares``, in threads) so a
new namespace's first call takes one instead of waiting for ``ip`` and slirp4netns; nothing in a
network depends on the namespace it goes to (routes and the slirp API socket are per network).
An exec never waits on it: if slirp cannot be started the exec runs in the same namespace
without a way out, and the failure is logged.
"""

from __future__ import annotations

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
from pathlib import Path

from trove_api.runtimes.local.cgroups import owner_name, start_time
from trove_api.runtimes.local.netbuild import (
    DNS_ROUTE,
    NETNS_DIR,
    SLIRP_API_DIR,
    SLIRP_DNS,
    SLIRP_GATEWAY,
    SLIRP_SUBNET,
    Network,
    build_network,
    delete_netns,
    run_ip_batch,
    teardown_network,
)
from trove_api.runtimes.local.netroutes import egress_route_lines, routable

log = logging.getLogger(__name__)

_PREFIX = "trove-"
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
        self._nets: dict[str, Network] = {}
        # User egress rules per key (E2B's update_network), applied to each network it gets.
        self._egress: dict[str, tuple[str, ...]] = {}
        self._spare_nets: list[Network] = []
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
                delete_netns(entry.name)
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
                teardown_network(net)
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
                net = Network(self._name(key))
                try:
                    build_network(net, self._allowed())
                except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                    log.error(
                        "cannot give %s outbound networking (%s); execs run without network, "
                        "next attempt in %.0f s",
                        key,
                        exc,
                        _RETRY_AFTER_S,
                    )
                    teardown_network(net)
                    self._retry_at = time.monotonic() + _RETRY_AFTER_S
                    return None
                self._nets[key] = net
            try:
                self._apply_egress(key, net)
            except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                # Never a network without the rules asked for: the exec runs without one.
                log.error("cannot apply %s's egress rules (%s); it runs without network", key, exc)
                teardown_network(self._nets.pop(key))
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
                    teardown_network(self._nets.pop(key))  # rebuilt, with the rules, when next used
                    raise

    def _apply_egress(self, key: str, net: Network) -> None:
        wanted = self._egress.get(key, ())
        if net.egress == wanted:
            return
        lines = egress_route_lines(
            net.egress,
            wanted,
            base=net.base,
            via_gateway=self._allowed(),
            gateway=SLIRP_GATEWAY,
            restore={f"{SLIRP_DNS}/32": DNS_ROUTE},
        )
        if lines:
            run_ip_batch(net, lines)
        net.egress = wanted

    def rekey(self, old: str, new: str) -> bool:
        """Hand ``old``'s network to ``new`` (a spare sandbox claimed), with ``new``'s egress
        rules applied; False, and ``old``'s network torn down, if that cannot be done."""
        with self._lock:
            net = self._nets.pop(old, None)
            if net is None or new in self._nets:
                if net is not None:
                    teardown_network(net)
                return False
            try:
                self._apply_egress(new, net)
            except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                log.error("cannot apply %s's egress rules (%s) to a spare's network", new, exc)
                teardown_network(net)
                return False
            self._nets[new] = net
            return True

    def drop(self, key: str) -> None:
        """Tear down ``key``'s network (a spare sandbox's, never claimed)."""
        with self._lock:
            net = self._nets.pop(key, None)
            if net is not None:
                teardown_network(net)

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
                teardown_network(net)
            self._nets.clear()
            self._spare_nets.clear()

    # -- internals --------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return f"{_PREFIX}{self.owner.removeprefix('srv-')}-{digest}"

    def _take_spare(self) -> Network | None:
        while self._spare_nets:
            net = self._spare_nets.pop(0)
            if net.slirp is not None and net.slirp.poll() is None:
                self.spares_taken += 1
                return net
            teardown_network(net)  # its slirp4netns died while it waited
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
                net = Network(f"{_PREFIX}{self.owner.removeprefix('srv-')}-spare{next(_SPARE_SERIAL)}")
            built = False
            try:
                build_network(net, self._allowed())
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
                        teardown_network(net)
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
                teardown_network(self._nets.pop(key))

    def _allowed(self) -> set[str]:
        return {str(ipaddress.ip_network(cidr, strict=False)) for cidr in self.allow}
