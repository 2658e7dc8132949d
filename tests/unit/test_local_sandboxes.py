"""The local runtime's warm sandboxes, real ones (bubblewrap, trove-agent): started once per
namespace however many first calls race, stopped when idle or for room (least recently used,
never one with a call in flight), replaced after their agent dies."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trove_api.runtimes.local.agent_sandbox import AgentSandbox
from trove_api.runtimes.local.runtime import LocalRuntime
from trove_api.runtimes.local.sandbox import Limits
from trove_core.errors import ChannelLostError
from trove_core.runtime import ExecOutput, ExecSpec, NamespaceRef
from trove_core.settings import Settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="per-namespace uids need root")


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[LocalRuntime]:
    rt = LocalRuntime(
        tmp_path, sandbox=True, network="off", uid_base=Settings().sandbox_uid_base,
        limits=Limits(cpu_seconds=10, file_bytes=1 << 20, processes=64, address_space_bytes=None),
        memory_bytes=256 << 20, max_warm=2,
    )  # fmt: skip
    try:
        yield rt
    finally:
        await rt.aclose()


def _ns(name: str) -> NamespaceRef:
    return NamespaceRef(
        workspace_id=f"ws-{secrets.token_hex(3)}", name=name, uid=Settings().sandbox_uid_base + 7
    )


async def _run(rt: LocalRuntime, ns: NamespaceRef, script: str) -> ExecOutput:
    return await rt.exec(ns, ExecSpec(script=script, stdin=None, timeout_s=20, output_limit=1 << 16))


def _key(ns: NamespaceRef) -> str:
    return f"{ns.workspace_id}.{ns.name}"


def _sandbox(rt: LocalRuntime, ns: NamespaceRef) -> AgentSandbox:
    return rt.sandboxes.warm[_key(ns)]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _agent_pid(sandbox: AgentSandbox) -> int:
    (init,) = _children(sandbox.proc.pid)
    (agent,) = _children(init)
    return agent


async def _busy(rt: LocalRuntime, ns: NamespaceRef) -> AgentSandbox:
    """The namespace's sandbox once a call (started in a task) is running in it."""
    while (sandbox := rt.sandboxes.warm.get(_key(ns))) is None or not sandbox.busy:
        await asyncio.sleep(0.01)
    return sandbox


async def test_concurrent_first_calls_start_one_sandbox(runtime: LocalRuntime) -> None:
    ns = _ns("racing")
    await runtime.provision(ns)
    # $PPID is the call's supervisor (a fork of the agent); its parent is the agent.
    agent_pid = "read -r _ _ _ agent _ < /proc/$PPID/stat; echo $agent"
    outputs = await asyncio.gather(*(_run(runtime, ns, agent_pid) for _ in range(8)))
    assert runtime.sandboxes.started == 1
    assert {o.exit_code for o in outputs} == {0}
    assert len({o.stdout for o in outputs}) == 1  # one agent ran them all


async def test_an_idle_sandbox_is_stopped_whole_and_the_next_call_starts_one(runtime: LocalRuntime) -> None:
    ns = _ns("idle")
    await runtime.provision(ns)
    assert (await _run(runtime, ns, "true")).exit_code == 0
    sandbox = _sandbox(runtime, ns)
    outer = sandbox.proc.pid
    inside = [*_children(outer), _agent_pid(sandbox)]
    assert await runtime.sandboxes.stop_idle() == 0  # used just now
    sandbox.last_used -= runtime.sandboxes.idle_s + 1
    assert await runtime.sandboxes.stop_idle() == 1
    assert runtime.sandboxes.warm == {}
    assert sandbox.proc.returncode is not None
    # bwrap's pid 1 and the agent are gone too (or left as zombies of nobody we could wait for).
    for pid in inside:
        assert not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes()
    assert (await _run(runtime, ns, "true")).exit_code == 0
    assert runtime.sandboxes.started == 2


async def test_the_least_recently_used_idle_sandbox_makes_room(runtime: LocalRuntime) -> None:
    a, b, c = _ns("a"), _ns("b"), _ns("c")
    for ns in (a, b, c):
        await runtime.provision(ns)
    await _run(runtime, a, "true")
    await _run(runtime, b, "true")
    await _run(runtime, a, "true")  # b is now the least recently used
    await _run(runtime, c, "true")
    assert set(runtime.sandboxes.warm) == {_key(a), _key(c)}


async def test_a_sandbox_with_a_call_in_flight_is_never_stopped_for_room(runtime: LocalRuntime) -> None:
    a, b, c = _ns("a"), _ns("b"), _ns("c")
    for ns in (a, b, c):
        await runtime.provision(ns)
    await _run(runtime, b, "true")
    slow = asyncio.create_task(_run(runtime, a, "read line </dev/stdin 2>/dev/null; sleep 1; echo done"))
    (await _busy(runtime, a)).last_used -= 3600  # the oldest, but busy
    await _run(runtime, c, "true")
    assert set(runtime.sandboxes.warm) == {_key(a), _key(c)}
    out = await slow
    assert (out.exit_code, out.stdout) == (0, b"done\n")


async def test_a_call_in_flight_when_the_agent_dies_gets_channel_lost_and_the_next_starts_anew(
    runtime: LocalRuntime,
) -> None:
    ns = _ns("dies")
    await runtime.provision(ns)
    slow = asyncio.create_task(_run(runtime, ns, "sleep 30"))
    sandbox = await _busy(runtime, ns)
    os.kill(_agent_pid(sandbox), signal.SIGKILL)
    with pytest.raises(ChannelLostError):
        await slow
    assert (await _run(runtime, ns, "echo again")).stdout == b"again\n"
    assert runtime.sandboxes.started == 2
