"""The async e2b SDK over the same server: lifecycle, fork, snapshots, commands and terminals."""

from __future__ import annotations

import asyncio

import pytest
from e2b import AsyncSandbox, CommandExitException, PtySize, SandboxQuery, SandboxState
from e2b.exceptions import NotFoundException

from tests.support.server import LiveServer


async def test_async_lifecycle(e2b_env: LiveServer) -> None:
    sbx = await AsyncSandbox.create(timeout=60, metadata={"who": "async"})
    made = [sbx]
    try:
        assert await sbx.is_running()
        await sbx.files.write("a.txt", "async")
        info = await sbx.get_info()
        assert info.metadata == {"who": "async"}
        listed = await AsyncSandbox.list(query=SandboxQuery(metadata={"who": "async"})).next_items()
        assert [s.sandbox_id for s in listed] == [sbx.sandbox_id]
        await sbx.set_timeout(120)
        (fork,) = await sbx.fork()
        assert isinstance(fork, AsyncSandbox)
        made.append(fork)
        assert await fork.files.read("a.txt") == "async"
        snap = await sbx.create_snapshot()
        from_snap = await AsyncSandbox.create(template=snap.snapshot_id)
        made.append(from_snap)
        assert await from_snap.files.read("a.txt") == "async"
        await sbx.pause()
        assert (await AsyncSandbox.get_info(sbx.sandbox_id)).state == SandboxState.PAUSED
        resumed = await AsyncSandbox.connect(sbx.sandbox_id)
        assert await resumed.files.read("a.txt") == "async"
        assert (await resumed.get_metrics())[-1].disk_used == len("async")
    finally:
        for s in made:
            await s.kill()
    with pytest.raises(NotFoundException):
        await AsyncSandbox.get_info(sbx.sandbox_id)


async def test_auto_pause_at_expiry_keeps_files(e2b_env: LiveServer) -> None:
    sbx = await AsyncSandbox.create(timeout=120, lifecycle={"on_timeout": "pause"})
    try:
        await sbx.files.write("kept.txt", "paused, not killed")
        # Only now: a pause racing the write would fail it (on E2B too).
        await sbx.set_timeout(1)
        for _ in range(200):  # the server's sweeper acts every e2b_sweep_interval_s; polled
            if (await AsyncSandbox.get_info(sbx.sandbox_id)).state == SandboxState.PAUSED:
                break
            await asyncio.sleep(0.05)
        assert (await AsyncSandbox.get_info(sbx.sandbox_id)).state == SandboxState.PAUSED
        again = await AsyncSandbox.connect(sbx.sandbox_id, timeout=60)
        assert await again.files.read("kept.txt") == "paused, not killed"
    finally:
        await sbx.kill()


async def test_commands_and_pty_async(e2b_env: LiveServer) -> None:
    sbx = await AsyncSandbox.create(envs={"FROM_CREATE": "yes"})
    try:
        chunks: list[str] = []
        result = await sbx.commands.run("echo $FROM_CREATE; echo e >&2", on_stdout=chunks.append)
        assert (result.exit_code, result.stdout, result.stderr, "".join(chunks)) == (
            0,
            "yes\n",
            "e\n",
            "yes\n",
        )
        with pytest.raises(CommandExitException) as failed:
            await sbx.commands.run("exit 5")
        assert failed.value.exit_code == 5

        cat = await sbx.commands.run("cat", background=True, stdin=True)
        await cat.send_stdin("piped\n")
        assert cat.pid in [p.pid for p in await sbx.commands.list()]
        again = await sbx.commands.connect(cat.pid)
        await cat.close_stdin()
        assert (await again.wait()).stdout == "piped\n"

        sleeper = await sbx.commands.run("sleep 600", background=True, timeout=0)
        assert await sleeper.kill() is True
        with pytest.raises(CommandExitException):
            await sleeper.wait()

        seen = bytearray()
        terminal = await sbx.pty.create(PtySize(rows=24, cols=80), on_data=seen.extend)
        await sbx.pty.send_stdin(terminal.pid, b"echo hi-$((40+2))\n")
        for _ in range(200):
            if b"hi-42" in seen:
                break
            await asyncio.sleep(0.05)
        assert b"hi-42" in seen
        assert await sbx.pty.kill(terminal.pid) is True
    finally:
        await sbx.kill()
