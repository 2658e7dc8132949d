"""The spare sandbox started ahead for the next namespace (``runtimes/local/spares``): real
bubblewrap sandboxes, real cgroups and (where the host allows) a real network namespace.

A spare runs as one uid before any namespace has it: it must become the sandbox of the one
namespace that owns that uid and of no other, with the namespace's cgroup, network and egress
rules; its directory must never take the place of one that exists (another server's sandbox
may hold it, even empty); and nothing of it may outlive the runtime.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest

from tests.hostile.helpers import LIMITS, ns_uid
from tests.support.sdk import client
from tests.support.server import start_server
from trove_api.runtimes.local import netns
from trove_api.runtimes.local.runtime import LocalRuntime
from trove_api.runtimes.local.sandbox import Limits
from trove_api.runtimes.local.spares import SPARE_PREFIX, _Spare
from trove_core.runtime import ExecOutput, ExecSpec, NamespaceRef
from trove_core.settings import Settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="per-namespace uids need root")

UID_BASE = Settings().sandbox_uid_base
# Far from the uids other tests' namespaces get, so no sandbox of theirs is counted here.
FIRST = UID_BASE + 900_000 + (os.getpid() % 1000) * 10
NETWORK: Literal["outbound", "off"] = "off" if netns.unavailable_reason() else "outbound"
_CONNECT = (
    'python3 -c "import socket, sys; s = socket.socket(); s.settimeout(3)\n'
    "try: s.connect(('{}', 80))\nexcept OSError as e: print(e.errno)\""
)


def _runtime(data_dir: Path, network: Literal["outbound", "off"] = NETWORK) -> LocalRuntime:
    return LocalRuntime(
        data_dir, sandbox=True, network=network, uid_base=UID_BASE,
        limits=Limits(cpu_seconds=10, file_bytes=1 << 20, processes=64, address_space_bytes=None),
        memory_bytes=256 << 20, spare_sandbox=True,
    )  # fmt: skip


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[LocalRuntime]:
    rt = _runtime(tmp_path)
    try:
        yield rt
    finally:
        await rt.aclose()


def _ns(uid: int) -> NamespaceRef:
    return NamespaceRef(workspace_id=f"ws-{secrets.token_hex(3)}", name="n", uid=uid)


def _key(ns: NamespaceRef) -> str:
    return f"{ns.workspace_id}.{ns.name}"


async def _run(rt: LocalRuntime, ns: NamespaceRef, script: str) -> ExecOutput:
    return await rt.exec(ns, ExecSpec(script=script, stdin=None, timeout_s=20, output_limit=1 << 16))


async def _spares_ready(rt: LocalRuntime, *uids: int) -> None:
    assert rt.spares is not None
    for _ in range(400):
        ready = rt.spares._ready
        if all(uid in ready and ready[uid].sandbox is not None for uid in uids):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no spares for {uids}: {sorted(rt.spares._ready)}")


async def _next_spare(rt: LocalRuntime) -> _Spare:
    """The spare started for the uid after ``FIRST``'s, once ``FIRST``'s namespace has run."""
    first = _ns(FIRST)
    await rt.provision(first)
    await _run(rt, first, "true")
    await _spares_ready(rt, FIRST + 1)
    assert rt.spares is not None
    return rt.spares._ready[FIRST + 1]


def _uid_processes(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
            except FileNotFoundError:
                pass
    return found


async def test_a_spare_becomes_the_sandbox_of_its_uid_only(runtime: LocalRuntime) -> None:
    spare = (await _next_spare(runtime)).sandbox
    assert spare is not None

    # Another uid (an older namespace's) never gets it, even with its directory empty.
    other = _ns(FIRST - 5)
    await runtime.provision(other)
    out = await _run(runtime, other, "id -u")
    assert out.stdout.decode().strip() == str(FIRST - 5)
    assert runtime.spares is not None
    assert runtime.spares.claimed == 0
    assert runtime.sandboxes.warm[_key(other)] is not spare

    owner = _ns(FIRST + 1)
    await runtime.provision(owner)
    await runtime.set_egress(owner, ["1.1.1.1/32"])
    script = f"id -u; ls -A /workspace; echo x > /workspace/f; {_CONNECT.format('1.1.1.1')}"
    out = await _run(runtime, owner, script)
    assert runtime.spares.claimed == 1
    sandbox = runtime.sandboxes.warm[_key(owner)]
    assert sandbox is spare
    assert sandbox.key == _key(owner)
    uid, *rest = out.stdout.decode().split()
    assert uid == str(FIRST + 1)
    if NETWORK == "outbound":  # the namespace's egress rule holds in the spare's network
        assert rest == [str(errno.EACCES)], out
    # Its workspace is the namespace's directory, the file written there by the command.
    assert (runtime._plain_dir(owner) / "f").read_text() == "x\n"
    # Its processes are in the namespace's cgroups, under the namespace's key.
    for procs in runtime.cgroups._prepared.get(_key(owner), []):
        assert str(sandbox.proc.pid) in Path(procs).read_text().split()
    if runtime.networks is not None:
        assert runtime.networks.slirp_running(_key(owner))


async def test_a_namespace_made_while_its_spare_is_starting_gets_it(runtime: LocalRuntime) -> None:
    # Made right after the namespace before it ran (E2B creates back to back): its spare was
    # started with that run and is most likely still starting; the namespace waits for it.
    first = _ns(FIRST)
    await runtime.provision(first)
    await _run(runtime, first, "true")
    owner = _ns(FIRST + 1)
    await runtime.provision(owner)
    out = await _run(runtime, owner, "id -u")
    assert out.stdout.decode().strip() == str(FIRST + 1)
    assert runtime.spares is not None
    assert runtime.spares.claimed == 1


async def test_a_spare_never_replaces_an_existing_directory_even_an_empty_one(runtime: LocalRuntime) -> None:
    waiting = (await _next_spare(runtime)).directory
    assert runtime.spares is not None

    # Made before (by another server, or before spares): empty, but it may be held by a sandbox.
    owner = _ns(FIRST + 1)
    directory = runtime._plain_dir(owner)
    directory.parent.mkdir(mode=0o711)
    directory.mkdir(mode=0o700)
    os.chown(directory, FIRST + 1, FIRST + 1)
    inode = directory.stat().st_ino
    await runtime.provision(owner)
    out = await _run(runtime, owner, "id -u; echo x > /workspace/f")
    assert out.stdout.decode().strip() == str(FIRST + 1)
    assert directory.stat().st_ino == inode
    assert (directory / "f").read_text() == "x\n"
    assert runtime.spares.claimed == 0
    assert not waiting.exists()  # the unusable spare is stopped and its directory gone


async def test_two_runtimes_on_one_root_never_swap_a_namespace_directory(tmp_path: Path) -> None:
    # Two API servers on one data directory: a namespace created through A gets A's spare; B's
    # spare for the same uid must never take the place of that directory, empty as it is.
    # No network: two runtimes in one process would name their network namespaces alike.
    a, b = _runtime(tmp_path, "off"), _runtime(tmp_path, "off")
    try:
        first = _ns(FIRST)
        await a.provision(first)
        await _run(a, first, "true")
        assert b.spares is not None
        b.spares.want(FIRST + 1)
        b.spares.fill()
        await _spares_ready(a, FIRST + 1)
        await _spares_ready(b, FIRST + 1)

        owner = _ns(FIRST + 1)
        await a.provision(owner)
        directory = a._plain_dir(owner)
        inode = directory.stat().st_ino
        await _run(a, owner, "true")  # A's sandbox holds the directory, still empty
        out = await _run(b, owner, "echo from-b > /workspace/b.txt; ls -A /workspace")
        assert out.stdout == b"b.txt\n", out
        assert directory.stat().st_ino == inode
        assert b.spares.claimed == 0
        out = await _run(a, owner, "cat /workspace/b.txt; echo from-a > /workspace/a.txt")
        assert out.stdout == b"from-b\n", out
        assert (await _run(b, owner, "cat /workspace/a.txt")).stdout == b"from-a\n"
        assert a.spares is not None
        assert a.spares.claimed == 1
    finally:
        await b.aclose()
        await a.aclose()


async def test_a_namespace_deleted_before_its_first_call_stops_the_spare_placed(
    runtime: LocalRuntime,
) -> None:
    spare = (await _next_spare(runtime)).sandbox
    assert spare is not None
    assert runtime.spares is not None

    owner = _ns(FIRST + 1)
    await runtime.provision(owner)
    assert runtime.spares._placed[runtime._plain_dir(owner)].sandbox is spare
    await runtime.deprovision(owner)
    assert not spare.alive
    assert not runtime.has_storage(owner)
    assert runtime.spares._placed == {}
    assert _uid_processes(FIRST + 1) == []


async def test_spares_and_their_processes_stop_with_the_runtime(tmp_path: Path) -> None:
    rt = LocalRuntime(
        tmp_path, sandbox=True, network=NETWORK, uid_base=UID_BASE,
        limits=Limits(cpu_seconds=10, file_bytes=1 << 20, processes=64, address_space_bytes=None),
        memory_bytes=256 << 20, spare_sandbox=True,
    )  # fmt: skip
    ns = _ns(FIRST)
    await rt.provision(ns)
    await _run(rt, ns, "true")
    await _spares_ready(rt, FIRST + 1)
    assert _uid_processes(FIRST + 1)
    # One more starting when the runtime closes: it is stopped too, not left behind.
    assert rt.spares is not None
    rt.spares.want(FIRST + 3)
    rt.spares.fill()
    await rt.aclose()
    for uid in range(FIRST + 1, FIRST + 5):
        assert _uid_processes(uid) == [], uid
    assert list(rt.spares.folder.iterdir()) == []
    assert list(rt.root.glob(f"{SPARE_PREFIX}*")) == []
    if rt.networks is not None:
        assert rt.networks.ready_spares() == []


def test_official_client_a_new_namespace_gets_its_own_uid_and_nothing_outlives_the_server() -> None:
    uid_base = 1_500_000 + (os.getpid() % 1000) * 100
    with start_server(**LIMITS, sandbox_uid_base=uid_base) as server:
        runtime = server.ctx.runtime
        assert isinstance(runtime, LocalRuntime)
        assert runtime.spares is not None
        with client(server, "first") as first:
            first.exec("echo mine > secret")
        for _ in range(400):
            if uid_base + 2 in runtime.spares._ready:
                break
            time.sleep(0.05)
        with client(server, "second") as second:
            out = second.exec("id -u; ls -A /workspace; cat /workspace/secret 2>&1 || true")
        assert runtime.spares.claimed == 1
        uid = ns_uid(server, "second")
        assert uid == uid_base + 2
        assert out.split("\n")[0] == str(uid)
        assert "mine" not in out
        assert ns_uid(server, "first") == uid_base + 1
    for spare_uid in range(uid_base + 1, uid_base + 6):
        assert _uid_processes(spare_uid) == [], spare_uid
