"""Processes that outlive a call, through the Runtime on the backend under test.

Their HTTP surface is E2B's process service (tests/e2b); unlike the rest of this suite
these tests call the runtime itself: ``make test`` runs them on the local backend (the warm
sandbox agent), ``make e2e`` on Kubernetes (the pod's agent).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.cluster import backend
from tests.support.server import make_data_dir
from trove_api.runtimes import make_runtime
from trove_core.errors import ProcessLimitReachedError
from trove_core.runtime import (
    ExecSpec,
    NamespaceRef,
    ProcessEnd,
    ProcessOutput,
    ProcessSpec,
    PtySize,
    Runtime,
)
from trove_core.settings import Settings

BASH_I = ("bash", "--norc", "--noprofile", "-i")


def _settings(**overrides: Any) -> Settings:
    if backend() == "kubernetes":
        from tests.support.cluster import cluster

        overrides = {**cluster().settings_overrides(), **overrides}
    return Settings(data_dir=make_data_dir(), **overrides)


def _namespace(settings: Settings) -> NamespaceRef:
    number = 1 + secrets.randbelow(50_000)
    return NamespaceRef(
        f"ws-procs{secrets.token_hex(4)}", f"procs-{number}", settings.sandbox_uid_base + number
    )


async def _open(settings: Settings, ns: NamespaceRef) -> Runtime:
    runtime = make_runtime(settings)
    report = getattr(runtime, "startup_report", None)
    if report is not None:
        report()
    await runtime.provision(ns)
    try:
        await runtime.list_processes(ns)
    except NotImplementedError:  # h-procs alone: the local warm agent is another branch's
        await runtime.aclose()
        pytest.skip("the local runtime has no warm agent session on this branch yet")
    return runtime


@pytest.fixture
async def rt() -> AsyncIterator[tuple[Runtime, NamespaceRef]]:
    settings = _settings(process_max=3)
    ns = _namespace(settings)
    runtime = await _open(settings, ns)
    try:
        yield runtime, ns
    finally:
        await runtime.aclose()


async def _until(items: AsyncIterator[ProcessOutput | ProcessEnd], needle: bytes) -> bytes:
    seen = b""
    async for item in items:
        assert isinstance(item, ProcessOutput), f"ended before {needle!r}: {seen!r}"
        seen += item.data
        if needle in seen:
            return seen
    raise AssertionError("the stream stopped without an end")


async def _to_end(items: AsyncIterator[ProcessOutput | ProcessEnd]) -> tuple[bytes, ProcessEnd]:
    seen = b""
    async for item in items:
        if isinstance(item, ProcessEnd):
            return seen, item
        seen += item.data
    raise AssertionError("the stream stopped without an end")


def _exec(script: str) -> ExecSpec:
    return ExecSpec(script=script, stdin=None, timeout_s=30, output_limit=1 << 20)


async def test_output_streams_while_it_runs_and_input_reaches_it(rt: tuple[Runtime, NamespaceRef]) -> None:
    runtime, ns = rt
    info = await runtime.start_process(
        ns, ProcessSpec(argv=("bash", "-c", "echo first; read x; echo got-$x; exit 4"), stdin=True)
    )
    output = runtime.process_output(ns, info.pid)
    assert await _until(output, b"first\n") == b"first\n"  # it waits for input: output came live
    await runtime.write_stdin(ns, info.pid, b"there\n")
    rest, end = await _to_end(output)
    assert (rest, end.exit_code) == (b"got-there\n", 4)
    assert await runtime.wait_process(ns, info.pid) == 4
    # Reconnecting from a cursor gets what came after it.
    items = [item async for item in runtime.process_output(ns, info.pid, cursor=len(b"first\n"))]
    assert items == [ProcessOutput("stdout", b"got-there\n", 6), ProcessEnd(4, 16)]


async def test_a_holding_reader_loses_nothing_and_an_absent_one_does_not_stall(
    rt: tuple[Runtime, NamespaceRef],
) -> None:
    runtime, ns = rt
    # Far more than the kept buffer, printed at once: a reader that holds gets all of it,
    # slowly, because the process waits for it. The command prints only once released through
    # its stdin, sent after the reader's request (the pause lets that request go first down the
    # same channel): else a slow attach (Kubernetes, a loaded node) finds bytes already dropped.
    flood = ("sh", "-c", "read go; exec head -c 8000000 /dev/zero")
    info = await runtime.start_process(ns, ProcessSpec(argv=flood, stdin=True))
    output = runtime.process_output(ns, info.pid, hold=True)
    first = asyncio.ensure_future(anext(output))
    await asyncio.sleep(0.2)
    await runtime.write_stdin(ns, info.pid, b"go\n")
    got = 0

    async def items() -> AsyncIterator[ProcessOutput | ProcessEnd]:
        yield await first
        async for item in output:
            yield item

    async for item in items():
        if isinstance(item, ProcessEnd):
            assert (item.exit_code, item.dropped) == (0, 0)
            break
        assert item.dropped == 0
        got += len(item.data)
        await asyncio.sleep(0.001)
    assert got == 8_000_000
    # Without a holding reader the process runs to its end on its own.
    alone = await runtime.start_process(ns, ProcessSpec(argv=("head", "-c", "8000000", "/dev/zero")))
    assert await runtime.wait_process(ns, alone.pid) == 0


async def test_a_terminal_answers_and_resizes(rt: tuple[Runtime, NamespaceRef]) -> None:
    runtime, ns = rt
    shell = await runtime.start_process(ns, ProcessSpec(argv=BASH_I, pty=PtySize(24, 80), tag="term"))
    output = runtime.process_output(ns, shell.pid)
    await runtime.write_stdin(ns, shell.pid, b"echo hi-$((40+2)); pwd\n")
    seen = await _until(output, b"hi-42")
    await runtime.resize_pty(ns, shell.pid, PtySize(40, 132))
    await runtime.write_stdin(ns, shell.pid, b"stty size\n")
    seen += await _until(output, b"40 132")
    await runtime.write_stdin(ns, shell.pid, b"exit\n")
    _rest, end = await _to_end(output)
    assert end.exit_code == 0
    assert b"/workspace" in seen  # it starts in the namespace


async def test_signal_list_and_the_count_bound(rt: tuple[Runtime, NamespaceRef]) -> None:
    runtime, ns = rt
    started = [
        await runtime.start_process(ns, ProcessSpec(argv=("sleep", "1000"), tag=f"s{i}")) for i in range(3)
    ]
    with pytest.raises(ProcessLimitReachedError):  # process_max=3
        await runtime.start_process(ns, ProcessSpec(argv=("true",)))
    assert sorted(p.tag or "" for p in await runtime.list_processes(ns) if p.running) == ["s0", "s1", "s2"]
    for info in started:
        await runtime.signal_process(ns, info.pid, signal.SIGTERM)
        assert await runtime.wait_process(ns, info.pid) == 128 + signal.SIGTERM
    assert not [p for p in await runtime.list_processes(ns) if p.running]


async def test_exec_leaves_none_behind_and_processes_outlive_execs(rt: tuple[Runtime, NamespaceRef]) -> None:
    runtime, ns = rt
    nap = f"500.{secrets.randbelow(10**6):06d}"
    kept = await runtime.start_process(ns, ProcessSpec(argv=("sleep", nap)))
    out = await runtime.exec(ns, _exec(f"setsid sleep {nap} & echo started"))
    assert out.stdout == b"started\n"
    count = await runtime.exec(ns, _exec(f"ps -eo args | grep -c '^sleep {nap}$' || true"))
    assert count.stdout.strip() == b"1"  # the process, not the exec's job
    assert [p.pid for p in await runtime.list_processes(ns) if p.running] == [kept.pid]
    await runtime.signal_process(ns, kept.pid, signal.SIGKILL)


async def test_processes_end_when_the_sandbox_stops() -> None:
    settings = _settings()
    ns = _namespace(settings)
    nap = f"600.{secrets.randbelow(10**6):06d}"
    runtime = await _open(settings, ns)
    try:
        await runtime.start_process(ns, ProcessSpec(argv=("bash", "-c", f"setsid sleep {nap} & sleep {nap}")))
    finally:
        await runtime.aclose()  # the sandbox's agent goes (locally the sandbox; on Kubernetes its channel)
    runtime = await _open(settings, ns)
    try:
        assert await runtime.list_processes(ns) == []
        count = await runtime.exec(ns, _exec(f"ps -eo args | grep -c '^sleep {nap}$' || true"))
        assert count.stdout.strip() == b"0"
    finally:
        await runtime.aclose()


async def test_what_a_process_leaves_behind_ends_with_it(rt: tuple[Runtime, NamespaceRef]) -> None:
    """In the sandbox, where the agent looks for leftovers on its loop before killing them."""
    runtime, ns = rt
    nap = f"700.{secrets.randbelow(10**6):06d}"
    script = f"setsid sleep {nap} & (sleep {nap} &) ; echo started"
    info = await runtime.start_process(ns, ProcessSpec(argv=("bash", "-c", script)))
    assert await runtime.wait_process(ns, info.pid) == 0
    count = await runtime.exec(ns, _exec(f"ps -eo args | grep -c '^sleep {nap}$' || true"))
    assert count.stdout.strip() == b"0"
