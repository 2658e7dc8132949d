"""Sandbox files through the official e2b SDK: the namespace's workspace/ is E2B's /home/user."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from e2b import AsyncSandbox, FileType, Sandbox
from e2b.exceptions import InvalidArgumentException, NotFoundException, RateLimitException

from tests.support.sdk import client
from tests.support.server import LiveServer
from trove_api.e2b.filesystem import WATCHERS_PER_SANDBOX


def test_file_operations(sbx: Sandbox) -> None:
    sbx.files.write_files(
        [{"path": "d/one.txt", "data": "1"}, {"path": "/home/user/d/e/two.bin", "data": b"\x00\x01"}]
    )
    assert sbx.files.read("d/e/two.bin", format="bytes") == bytearray(b"\x00\x01")
    assert b"".join(sbx.files.read("d/one.txt", format="stream")) == b"1"
    assert sbx.files.exists("d/one.txt")
    assert not sbx.files.exists("d/none")
    info = sbx.files.get_info("d/e")
    assert info.type == FileType.DIR
    assert info.path == "/home/user/d/e"
    shallow = {e.path for e in sbx.files.list("d")}
    assert shallow == {"/home/user/d/e", "/home/user/d/one.txt"}
    deep = {e.path for e in sbx.files.list("/home/user/d", depth=2)}
    assert "/home/user/d/e/two.bin" in deep
    assert sbx.files.make_dir("new/dir") is True
    assert sbx.files.make_dir("new/dir") is False
    moved = sbx.files.rename("d/one.txt", "new/dir/one.txt")
    assert moved.path == "/home/user/new/dir/one.txt"
    assert sbx.files.read("new/dir/one.txt") == "1"
    sbx.files.remove("d")
    assert not sbx.files.exists("d/e/two.bin")
    with pytest.raises(NotFoundException):
        sbx.files.read("d/one.txt")


@pytest.mark.parametrize("path", ["/etc/passwd", "/home/user/../../etc/passwd", "../x", "/home/userx/a"])
def test_paths_outside_the_home_are_refused(sbx: Sandbox, path: str) -> None:
    with pytest.raises(InvalidArgumentException):
        sbx.files.read(path)
    with pytest.raises(InvalidArgumentException):
        sbx.files.write(path, "no")
    with pytest.raises(InvalidArgumentException):
        sbx.files.list(path)


def test_large_upload_and_download_stream(big_env: LiveServer) -> None:
    sbx = Sandbox.create()
    size = 100 * 1024 * 1024
    chunk = bytes(range(256)) * 4096  # 1 MiB

    class Source(io.RawIOBase):
        sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
            n = min(len(buf), size - self.sent, len(chunk))
            buf[:n] = chunk[:n]
            self.sent += n
            return n

    sbx.files.write("big.bin", io.BufferedReader(Source(), buffer_size=1 << 20))
    total = 0
    for piece in sbx.files.read("big.bin", format="stream"):
        total += len(piece)
    assert total == size
    sbx.kill()


def test_watch_sees_changes_made_through_trove_sdk(sbx: Sandbox, e2b_env: LiveServer) -> None:
    sbx.files.make_dir("watched")
    handle = sbx.files.watch_dir("watched", recursive=True)
    try:
        with client(e2b_env, sbx.sandbox_id) as trove:
            trove.write("watched/sub/from-trove.txt", "hi")
            trove.write("elsewhere.txt", "not watched")
        seen: list[str] = []
        for _ in range(100):  # polls until the event arrives; no timing asserted
            seen += [e.name for e in handle.get_new_events()]
            if seen:
                break
            time.sleep(0.05)
        assert seen == ["sub/from-trove.txt"]
    finally:
        handle.stop()


async def test_async_sdk_watch_and_files(e2b_env: LiveServer) -> None:
    sbx = await AsyncSandbox.create()
    try:
        await sbx.files.write("a.txt", "async")
        assert await sbx.files.read("a.txt") == "async"
        events = []
        handle = await sbx.files.watch_dir("/home/user", on_event=events.append, recursive=True)
        with client(e2b_env, sbx.sandbox_id) as trove:
            trove.write("b/c.txt", "x")
            trove.delete("a.txt")
        for _ in range(100):
            if len(events) >= 2:
                break
            await __import__("asyncio").sleep(0.05)
        await handle.stop()
        assert [(e.name, e.type.name) for e in events] == [("b/c.txt", "WRITE"), ("a.txt", "REMOVE")]
    finally:
        await sbx.kill()


def test_watchers_per_sandbox_are_capped(sbx: Sandbox) -> None:
    handles = [sbx.files.watch_dir("/home/user") for _ in range(WATCHERS_PER_SANDBOX)]
    try:
        with pytest.raises(RateLimitException):
            sbx.files.watch_dir("/home/user")
    finally:
        for handle in handles:
            handle.stop()
    sbx.files.watch_dir("/home/user").stop()  # removing them made room again


def test_watch_reports_a_rename(sbx: Sandbox) -> None:
    sbx.files.write("w/old.txt", "x")
    handle = sbx.files.watch_dir("w")
    try:
        sbx.files.rename("w/old.txt", "w/new.txt")
        seen: list[tuple[str, str]] = []
        for _ in range(100):  # polled until both events arrive; no timing asserted
            seen += [(e.name, e.type.name) for e in handle.get_new_events()]
            if len(seen) >= 2:
                break
            time.sleep(0.05)
        assert seen == [("old.txt", "REMOVE"), ("new.txt", "WRITE")]
    finally:
        handle.stop()


def test_gzip_upload(sbx: Sandbox) -> None:
    payload = b"compress me " * 100_000
    sbx.files.write("z.txt", payload, gzip=True)
    assert sbx.files.read("z.txt", format="bytes") == bytearray(payload)


async def test_watch_ends_when_its_sandbox_is_killed(
    quick_keepalive_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = f"{quick_keepalive_server.base_url}/e2b"
    monkeypatch.setenv("E2B_API_URL", base)
    monkeypatch.setenv("E2B_SANDBOX_URL", base)
    monkeypatch.setenv("E2B_API_KEY", quick_keepalive_server.workspace_key)
    sbx = await AsyncSandbox.create()
    ended = asyncio.Event()
    handle = await sbx.files.watch_dir("/home/user", on_event=lambda e: None, on_exit=lambda e: ended.set())
    await sbx.kill()
    await asyncio.wait_for(ended.wait(), 30)  # a bound on a hang, not a timing assertion
    await handle.stop()
