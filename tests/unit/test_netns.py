"""Sandbox networks as real network namespaces and slirp4netns processes (root only)."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from trove_api.runtimes.local.netns import SandboxNetworks, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def _alive(pid: int | None) -> bool:
    return pid is not None and Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_least_recently_used_idle_networks_stop_beyond_the_cap() -> None:
    networks = SandboxNetworks(max_live=2)
    try:
        busy = networks.acquire("busy")  # held: never stopped, whatever the cap
        assert busy is not None
        assert networks.acquire("old") is not None
        networks.release("old")
        old_pid = networks.slirp_pid("old")
        assert networks.acquire("new") is not None
        networks.release("new")
        assert networks.slirp_pid("old") is None
        assert not _alive(old_pid)
        assert networks.slirp_pid("busy") is not None
        assert Path(busy).exists()
    finally:
        networks.close()


def test_close_stops_every_slirp_and_removes_the_namespaces() -> None:
    networks = SandboxNetworks()
    paths = [networks.acquire(f"k{i}") for i in range(3)]
    pids = [networks.slirp_pid(f"k{i}") for i in range(3)]
    networks.close()
    for path, pid in zip(paths, pids, strict=True):
        assert path is not None
        assert not Path(path).exists()
        assert not _alive(pid)


def _spares_ready(networks: SandboxNetworks, count: int) -> list[str]:
    deadline = time.monotonic() + 30  # a bound on a hang, not a speed check
    while len(ready := networks.ready_spares()) < count:
        assert time.monotonic() < deadline, "the spare networks were never built"
        time.sleep(0.02)
    return ready


def _routes(path: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net={path}", "ip", "route", "show"], capture_output=True, text=True, check=True
    ).stdout


def test_a_spare_network_goes_to_one_namespace_and_is_replaced() -> None:
    networks = SandboxNetworks(spares=1)
    try:
        first = networks.acquire("first")  # none ready yet: built for it, and a spare started
        assert first is not None
        (spare,) = _spares_ready(networks, 1)
        assert networks.acquire("second") == spare
        assert networks.spares_taken == 1
        assert networks.acquire("second") == spare  # the same namespace keeps it
        (refill,) = _spares_ready(networks, 1)
        assert refill not in (first, spare)
        third = networks.acquire("third")
        assert third == refill
        assert len({first, spare, third}) == 3
        assert networks.slirp_running("second")
        assert networks.api_socket("second") != networks.api_socket("third")
        # Built ahead, it is fenced like any other: private ranges and slirp's gateway refused.
        routes = _routes(spare)
        assert "prohibit 10.0.0.0/8" in routes
        assert "prohibit 169.254.0.0/16" in routes
    finally:
        networks.close()


def test_concurrent_first_calls_never_share_a_spare() -> None:
    networks = SandboxNetworks(spares=2)
    try:
        networks.acquire("warmup")
        _spares_ready(networks, 2)
        with ThreadPoolExecutor(4) as pool:
            paths = list(pool.map(networks.acquire, [f"ns{i}" for i in range(4)]))
        assert None not in paths
        assert len(set(paths)) == 4
        assert networks.spares_taken >= 2
    finally:
        networks.close()


def test_close_tears_down_spares_ready_and_in_the_making() -> None:
    networks = SandboxNetworks(spares=2)
    networks.acquire("a")
    ready = _spares_ready(networks, 2)
    pids = [networks.slirp_pid("a")]
    networks.release("a")
    taken = networks.acquire("b")  # takes one; its replacement is being built as close runs
    networks.close()
    assert taken is not None
    assert not Path(taken).exists()
    assert networks.ready_spares() == []
    for path in ready:
        assert not Path(path).exists()
    assert not _alive(pids[0])
