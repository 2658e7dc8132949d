"""Per-namespace cgroups on this host's real hierarchy: made on first use, removed at shutdown, and
swept by the next server when a server was killed."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from trove_api.runtimes.local.cgroups import Cgroups, owner_name, start_time
from trove_api.runtimes.local.runtime import LocalRuntime
from trove_api.runtimes.local.sandbox import Limits
from trove_core.runtime import ExecSpec, NamespaceRef
from trove_core.settings import Settings


def writable_cgroups() -> Cgroups:
    groups = Cgroups(64 << 20, 64)
    if groups.mode == "none":
        pytest.skip("no writable cgroup hierarchy here (needs root): CI runs this as root")
    return groups


def test_release_removes_the_groups_made_and_keeps_a_busy_one() -> None:
    groups = writable_cgroups()
    idle, busy = (f"test-{secrets.token_hex(4)}" for _ in range(2))
    idle_dirs = [os.path.dirname(p) for p in groups.prepare(idle)]
    busy_procs = groups.prepare(busy)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        for procs in busy_procs:
            Path(procs).write_text(str(sleeper.pid))
        groups.release()
        assert not any(os.path.exists(d) for d in idle_dirs)
        assert all(os.path.exists(p) for p in busy_procs)  # a process still runs in it
    finally:
        sleeper.kill()
        sleeper.wait()
    groups.release()  # once it is empty, the next release removes it
    assert not any(os.path.exists(p) for p in busy_procs)


def test_the_local_runtime_removes_its_groups_when_it_closes(tmp_path: Path) -> None:
    writable_cgroups()
    runtime = LocalRuntime(
        tmp_path, sandbox=True, network="off", uid_base=Settings().sandbox_uid_base,
        limits=Limits(cpu_seconds=10, file_bytes=1 << 20, processes=64, address_space_bytes=None),
        memory_bytes=64 << 20,
    )  # fmt: skip
    ns = NamespaceRef(workspace_id=f"ws-test{secrets.token_hex(4)}", name="alice")

    async def use_then_close() -> list[str]:
        await runtime.provision(ns)
        out = await runtime.exec(ns, ExecSpec(script="true", stdin=None, timeout_s=10, output_limit=1 << 16))
        assert out.exit_code == 0
        made = [p for files in runtime.cgroups._prepared.values() for p in files]
        assert made
        assert all(f"{ns.workspace_id}.alice" in p and os.path.exists(p) for p in made)
        await runtime.aclose()
        return made

    made = asyncio.run(use_then_close())
    assert not any(os.path.exists(p) for p in made)


def _dead_owner() -> str:
    """The owner name of a process that has exited (its pid may be reused: start times differ)."""
    gone = subprocess.Popen(["sleep", "30"])
    name = owner_name(gone.pid)
    gone.kill()
    gone.wait()
    assert start_time(gone.pid) is None or owner_name(gone.pid) != name
    return name


def test_a_killed_servers_groups_are_swept_by_the_next_and_a_live_ones_never(tmp_path: Path) -> None:
    groups = writable_cgroups()
    dead = _dead_owner()
    reused = f"srv-{os.getpid()}-1"  # our pid, another start time: a server long gone
    bases = groups._bases()
    made = {
        owner: [base / owner / f"test-{secrets.token_hex(4)}" for base in bases] for owner in (dead, reused)
    }
    busy = [base / dead / f"test-busy-{secrets.token_hex(4)}" for base in bases]
    for path in [*made[dead], *made[reused], *busy]:
        path.mkdir(parents=True)
    live_procs = groups.prepare(f"test-live-{secrets.token_hex(4)}")  # empty between execs
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        for path in busy:
            (path / "cgroup.procs").write_text(str(sleeper.pid))
        removed = groups.sweep()  # as every server does when it starts (the constructor)
        assert removed >= len(made[dead]) + len(made[reused])
        assert not any(p.exists() for p in [*made[dead], *made[reused]])
        assert not any((base / reused).exists() for base in bases)
        assert all(p.exists() for p in busy)  # something still runs in it
        assert all(os.path.exists(p) for p in live_procs)
        assert all(f"/{groups.owner}/" in p for p in live_procs)
    finally:
        sleeper.kill()
        sleeper.wait()
    Cgroups(64 << 20, 64)  # the next server starting up
    assert not any((base / dead).exists() for base in bases)
    groups.release()
    assert not any(os.path.exists(p) for p in live_procs)
