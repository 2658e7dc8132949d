"""Hostile uses of E2B's process service: other sandboxes' processes, floods, huge stdin."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException
from protobuf import Oneof

from tests.e2b import WAIT_S
from tests.e2b.test_access import _mint
from tests.support.server import LiveServer
from trove_api.e2b.envd import process_pb as pb
from trove_api.e2b.envd.process_connect import ProcessClient


def test_locked_key_and_foreign_token_cannot_touch_another_sandboxs_processes(e2b_env: LiveServer) -> None:
    a, b = Sandbox.create(), Sandbox.create()
    try:
        victim = b.commands.run("sleep 600", background=True, timeout=0)
        locked = _mint(e2b_env, namespace=a.sandbox_id)
        with pytest.raises(SandboxException, match="403"):
            Sandbox.connect(b.sandbox_id, api_key=locked)
        mine = Sandbox.connect(a.sandbox_id, api_key=locked)
        # Pids are per sandbox: a's handle names a's processes only.
        assert victim.pid not in [p.pid for p in mine.commands.list()]
        assert mine.commands.kill(victim.pid) is False
        # a's envd token presented for b: refused before any process is named.
        headers = {
            "E2b-Sandbox-Id": b.sandbox_id,
            "X-Access-Token": str(mine._envd_access_token),
            "Content-Type": "application/json",
        }
        for method, body in (("List", {}), ("SendSignal", {"process": {"pid": victim.pid}, "signal": 9})):
            r = httpx.post(
                f"{e2b_env.base_url}/e2b/process.Process/{method}", json=body, headers=headers, timeout=WAIT_S
            )
            assert r.status_code == 401, r.text
        assert victim.pid in [p.pid for p in b.commands.list()]
    finally:
        a.kill()
        b.kill()


def test_flooding_output_to_a_slow_reader_keeps_memory_bounded_and_loses_nothing(e2b_env: LiveServer) -> None:
    """64 MB of output to a client that reads slowly: the process waits for the reader (as
    under E2B's envd) instead of the server buffering or dropping.

    The server runs in this process (a uvicorn thread), so tracemalloc's peak covers it; the
    client keeps no output (``retain_output=False``) and counts bytes only.
    """
    sbx = Sandbox.create()
    try:
        seen = [0]
        notes: list[str] = []
        gc.collect()
        tracemalloc.start()
        try:
            handle = sbx.commands.run("head -c 64000000 /dev/zero", background=True, retain_output=False)
            stopper = threading.Event()

            def count(chunk: str) -> None:
                seen[0] += len(chunk)
                stopper.wait(0.002)  # a slow reader

            result = handle.wait(on_stdout=count, on_stderr=notes.append)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.exit_code == 0
        assert (seen[0], notes) == (64_000_000, [])
        assert peak < 32 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
    finally:
        sbx.kill()


def test_a_late_reader_is_told_what_it_missed(e2b_env: LiveServer) -> None:
    """Nobody reading: the process runs on and the kept buffer keeps only its last bytes."""
    sbx = Sandbox.create()
    try:
        handle = sbx.commands.run("head -c 3000000 /dev/zero; echo; echo done-marker", background=True)
        handle.disconnect()
        for _ in range(400):
            if handle.pid not in [p.pid for p in sbx.commands.list()]:
                break
            time.sleep(0.05)
        result = sbx.commands.connect(handle.pid).wait()
        assert result.stdout.endswith("\ndone-marker\n")
        assert len(result.stdout) < 3_000_000
        assert "bytes of output dropped: this reader fell behind" in result.stderr
    finally:
        sbx.kill()


def test_huge_stdin_is_refused_or_taken_without_harm(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    try:
        cat = sbx.commands.run("wc -c", background=True, stdin=True)
        chunk = b"x" * (1024 * 1024)
        for _ in range(16):
            cat.send_stdin(chunk)
        cat.close_stdin()
        assert cat.wait().stdout.strip() == str(16 * len(chunk))
        # The sandbox still answers.
        assert sbx.commands.run("echo alive").stdout == "alive\n"
    finally:
        sbx.kill()


async def test_idle_streams_carry_keepalives_and_tags_select(e2b_env: LiveServer) -> None:
    """The interval the SDK asks for (``Keepalive-Ping-Interval``), and envd's tag selector."""
    sbx = Sandbox.create()
    try:
        headers = {
            "E2b-Sandbox-Id": sbx.sandbox_id,
            "X-Access-Token": str(sbx._envd_access_token),
            "Keepalive-Ping-Interval": "1",
        }
        async with ProcessClient(f"{e2b_env.base_url}/e2b") as rpc:
            request = pb.StartRequest(
                process=pb.ProcessConfig(cmd="/bin/bash", args=["-c", "sleep 2.5; echo late"]), tag="idle"
            )
            kinds = []
            async for response in rpc.start(request, headers=headers):
                assert response.event is not None
                assert response.event.event is not None
                kinds.append(response.event.event.field)
            by_tag = pb.ProcessSelector(selector=Oneof(field="tag", value="idle"))
            replay = [
                r.event.event.field
                async for r in rpc.connect(pb.ConnectRequest(process=by_tag), headers=headers)
                if r.event and r.event.event
            ]
        assert kinds[0] == "start"
        assert kinds[-2:] == ["data", "end"]
        assert "keepalive" in kinds[1:-2]
        assert replay[0] == "start"
        assert replay[-1] == "end"
    finally:
        sbx.kill()
