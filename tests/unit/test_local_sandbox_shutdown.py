"""A sandbox start that does not finish (the runtime closed under it, or its caller cancelled:
E2B's pause, kill and shutdown stop the warm-up start) leaves nothing behind: no process of the
sandbox, no pipe transport that outlives the event loop which made it (the warning it gives when
collected later, in another test or after the server's loop ended, is an error under pytest).

The agent here never says hello, so the start is certainly still waiting for it (a real agent
that is just slow, as under load); it marks that it runs, so the test knows the spawn is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from trove_api.runtimes.local import launch
from trove_api.runtimes.local.runtime import LocalRuntime
from trove_api.runtimes.local.sandbox import Limits
from trove_core.errors import UnavailableError
from trove_core.runtime import NamespaceRef
from trove_core.settings import Settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="per-namespace uids need root")

SILENT_AGENT = """\
import pathlib, sys
pathlib.Path(sys.argv[1], ".spawned").touch()
sys.stdin.buffer.read()
"""


def _runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalRuntime:
    agent = tmp_path / "silent_agent.py"
    agent.write_text(SILENT_AGENT)
    monkeypatch.setattr(launch, "AGENT_SOURCE", agent)
    rt = LocalRuntime(
        tmp_path / "data", sandbox=True, network="off", uid_base=Settings().sandbox_uid_base,
        limits=Limits(cpu_seconds=10, file_bytes=1 << 20, processes=64, address_space_bytes=None),
        memory_bytes=256 << 20,
    )  # fmt: skip
    rt.launcher.compiled = None  # the (silent) source is what the sandbox runs
    return rt


def _ns(name: str) -> NamespaceRef:
    return NamespaceRef(
        workspace_id=f"ws-{secrets.token_hex(3)}", name=name, uid=Settings().sandbox_uid_base + 9
    )


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _running(pid: int) -> bool:
    """Not gone, and not a zombie nobody waits for (its cmdline is empty then)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


Scenario = Callable[[LocalRuntime, "asyncio.Task[object]"], Awaitable[None]]


def _start_then(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: Scenario) -> asyncio.Task[object]:
    """A first call starts the namespace's sandbox; once its agent runs, ``scenario``. Run on a
    loop of its own that ends after it, as the server's does; then nothing of the sandbox may
    be left. Returns the call."""
    spawned: list[int] = []
    calls: list[asyncio.Task[object]] = []

    async def main() -> None:
        # Only what this start spawns: other tests' servers in this process have sandboxes too.
        before = set(_descendants(os.getpid()))
        rt = _runtime(tmp_path, monkeypatch)
        ns = _ns("starting")
        await rt.provision(ns)
        calls.append(asyncio.create_task(rt.list_processes(ns)))
        while not (rt._plain_dir(ns) / ".spawned").exists():
            assert not calls[0].done(), calls[0]
            await asyncio.sleep(0.01)
        spawned.extend(pid for pid in _descendants(os.getpid()) if pid not in before)
        try:
            await scenario(rt, calls[0])
        finally:
            await rt.aclose()

    unraisable: list[str] = []
    try:
        asyncio.run(main())
        assert spawned
        assert [pid for pid in spawned if _running(pid)] == []
        with _recorded(unraisable):
            gc.collect()  # an unclosed transport, pipe or process warns here
        assert unraisable == []
    finally:
        for pid in spawned:  # on failure only: nothing for the tests after this one
            if _running(pid):
                os.kill(pid, 9)
    return calls[0]


@contextlib.contextmanager
def _recorded(found: list[str]) -> Iterator[None]:
    """What goes to ``sys.unraisablehook`` (warnings raised in ``__del__``, as errors here)."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: found.append(f"{u.exc_value!r} in {u.object!r}")
    try:
        yield
    finally:
        sys.unraisablehook = hook


def test_closing_the_runtime_stops_a_sandbox_still_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def close_meanwhile(rt: LocalRuntime, call: asyncio.Task[object]) -> None:
        await rt.aclose()  # as the server's shutdown does, the call still waiting for its sandbox

    call = _start_then(tmp_path, monkeypatch, close_meanwhile)
    with pytest.raises(UnavailableError, match="shutting down"):
        call.result()


def test_a_cancelled_start_stops_its_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def cancel(rt: LocalRuntime, call: asyncio.Task[object]) -> None:
        call.cancel()  # E2B's pause, kill or shutdown stopping the warm-up
        with contextlib.suppress(asyncio.CancelledError):
            await call

    assert _start_then(tmp_path, monkeypatch, cancel).cancelled()


def test_a_call_after_close_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        rt = _runtime(tmp_path, monkeypatch)
        ns = _ns("late")
        await rt.provision(ns)
        await rt.aclose()
        with pytest.raises(UnavailableError, match="shutting down"):
            await rt.list_processes(ns)
        assert rt.sandboxes.started == 0

    asyncio.run(main())


def test_a_start_cancelled_twice_still_stops_its_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second cancel lands while the first one's stop waits for the killed sandbox (as when
    a shutdown cancels a warm-up that a pause has just cancelled): the stop still ends, and
    closes the sandbox's pipes and descriptor socket."""

    async def cancel_twice(rt: LocalRuntime, call: asyncio.Task[object]) -> None:
        call.cancel()
        for _ in range(3):  # the start's cleanup is now in its stop, waiting for the process
            await asyncio.sleep(0)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call

    assert _start_then(tmp_path, monkeypatch, cancel_twice).cancelled()
