"""Sandbox networks as real network namespaces and slirp4netns processes (root only)."""

from __future__ import annotations

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
