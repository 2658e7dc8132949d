"""The local transport's handed-over descriptors (``channel/fds.py``): what a hostile agent sends
on the socket beside its pipes never makes the API read or write anything but a regular file on
the namespace's own filesystem, never blocks it, and never leaks a descriptor.

The fake agent plays the agent's side of the channel (frames) and of the socket (real
descriptors over a real socketpair); the real agent's use of it is in ``test_agent.py``.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.unit.test_channel_guard import FakeAgent, frame, opened
from trove_api.runtimes.channel import fds
from trove_api.runtimes.channel.fds import FdChannel, new_pair
from trove_api.runtimes.channel.protocol import CANCEL, DATA, EOF, RESULT
from trove_core.errors import ChannelLostError, TroveError
from trove_core.runtime import FileStat


def hand(sock: socket.socket, rid: int, *fds: int) -> None:
    """Send ``fds`` for request ``rid`` as the agent does."""
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sock.sendmsg([struct.pack(">I", rid)], rights)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def body(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class Fixture:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.fake = FakeAgent()
        api_end, self.agent_end = new_pair()
        self.fake.session.fds = FdChannel(api_end, os.stat(root).st_dev)

    def close(self) -> None:
        if self.fake.session.fds is not None:
            self.fake.session.fds.close()
        self.agent_end.close()


@pytest.fixture
async def fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Fixture]:
    monkeypatch.setattr(fds, "HANDED_MIN_BYTES", 0)  # every upload through a descriptor
    before = open_fds()
    made = Fixture(tmp_path)
    yield made
    made.close()
    assert open_fds() == before  # nothing received was left open


# Descriptors a hostile agent could send instead of the file it opened, each made in ``root``'s
# test directory (the namespace) or elsewhere; opened non-blocking so making them never waits.
def _fifo(root: Path) -> int:
    os.mkfifo(root / "fifo")
    return os.open(root / "fifo", os.O_RDWR | os.O_NONBLOCK)


def _fresh(root: Path, flags: int) -> int:
    return os.open(root / "fresh", flags | os.O_CREAT, 0o644)


def _full(root: Path) -> int:
    (root / "existing").write_bytes(b"keep me")
    return os.open(root / "existing", os.O_RDWR)


HOSTILE: dict[str, Callable[[Path], int]] = {
    "fifo": _fifo,
    "directory": lambda root: os.open(root, os.O_RDONLY | os.O_DIRECTORY),
    "device": lambda root: os.open("/dev/zero", os.O_RDWR),
    "socket": lambda root: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).detach(),
    "proc_file": lambda root: os.open("/proc/self/status", os.O_RDONLY),
    "memfd": lambda root: os.memfd_create("hostile"),
    "existing_file_with_content": _full,
    "read_only_fresh_file": lambda root: _fresh(root, os.O_RDONLY),
}


@pytest.mark.parametrize("kind", [*HOSTILE, "nothing"])
async def test_an_upload_takes_only_a_fresh_writable_file_on_the_namespaces_filesystem(
    fixture: Fixture, kind: str
) -> None:
    fake = fixture.fake
    upload = asyncio.create_task(fake.session.write("x.bin", body(b"a" * 1000), 1 << 20))
    rid = await opened(fake)
    if kind != "nothing":
        fd = HOSTILE[kind](fixture.root)
        hand(fixture.agent_end, rid, fd)
        os.close(fd)
    fake.session.feed(frame(rid, DATA, b"fd"))
    with pytest.raises(ChannelLostError):
        await asyncio.wait_for(upload, 5)  # refused at once: never blocked on what was sent
    assert fake.aborted == 1  # the channel is dropped: the sandbox is restarted
    assert EOF not in fake.kinds(rid)
    if kind == "existing_file_with_content":
        assert (fixture.root / "existing").read_bytes() == b"keep me"


@pytest.mark.parametrize(
    "kind", [*HOSTILE.keys() - {"existing_file_with_content", "read_only_fresh_file"}, "nothing"]
)
async def test_a_read_takes_only_a_regular_file_on_the_namespaces_filesystem(
    fixture: Fixture, kind: str
) -> None:
    fake = fixture.fake
    reading = asyncio.create_task(fake.session.open_file("x.bin"))
    rid = await opened(fake)
    if kind != "nothing":
        fd = HOSTILE[kind](fixture.root)
        hand(fixture.agent_end, rid, fd)
        os.close(fd)
    fake.session.feed(
        frame(rid, RESULT, json.dumps({"ok": True, "fd": True, "size": 1 << 30, "mtime_ns": 0}).encode())
    )
    with pytest.raises(ChannelLostError):
        await asyncio.wait_for(reading, 5)
    assert fake.aborted == 1


async def test_a_read_uses_its_own_view_of_the_file_not_the_agents_word(fixture: Fixture) -> None:
    (fixture.root / "f").write_bytes(b"0123456789")
    fake = fixture.fake
    reading = asyncio.create_task(fake.session.open_file("f"))
    rid = await opened(fake)
    fd = os.open(fixture.root / "f", os.O_RDONLY)
    hand(fixture.agent_end, rid, fd)
    os.close(fd)
    # The agent claims a huge file: the API reads what the descriptor holds, no more.
    fake.session.feed(
        frame(rid, RESULT, json.dumps({"ok": True, "fd": True, "size": 1 << 40, "mtime_ns": 0}).encode())
    )
    reader = await asyncio.wait_for(reading, 5)
    assert reader.stat.size == 10
    assert b"".join([c async for c in reader.iter_bytes(0, 1 << 40)]) == b"0123456789"
    await reader.aclose()
    assert fake.aborted == 0


async def test_descriptors_for_requests_that_did_not_ask_are_closed(fixture: Fixture) -> None:
    (fixture.root / "f").write_bytes(b"data")
    fake = fixture.fake
    fd = os.open(fixture.root / "f", os.O_RDONLY)
    for stray in (0, 7, 99):  # no such request
        hand(fixture.agent_end, stray, fd, fd, fd)
    reading = asyncio.create_task(fake.session.open_file("f"))
    rid = await opened(fake)
    hand(fixture.agent_end, rid, fd, fd)  # one too many: the extra is closed
    os.close(fd)
    fake.session.feed(
        frame(rid, RESULT, json.dumps({"ok": True, "fd": True, "size": 4, "mtime_ns": 0}).encode())
    )
    reader = await asyncio.wait_for(reading, 5)
    assert b"".join([c async for c in reader.iter_bytes(0, 4)]) == b"data"
    await reader.aclose()
    # The fixture checks that no received descriptor is left open.


async def test_an_agent_that_answers_ok_before_the_end_never_gets_a_commit(fixture: Fixture) -> None:
    fake = fixture.fake
    gate = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        await gate.wait()
        yield b"b" * 1000

    upload = asyncio.create_task(fake.session.write("x.bin", slow_body(), 1 << 20))
    rid = await opened(fake)
    fd = os.open(fixture.root / "temp", os.O_WRONLY | os.O_CREAT, 0o644)
    hand(fixture.agent_end, rid, fd)
    os.close(fd)
    fake.session.feed(frame(rid, DATA, b"fd"))
    await asyncio.sleep(0.05)
    fake.session.feed(frame(rid, RESULT, json.dumps({"ok": True, "size": 2000}).encode()))
    gate.set()
    with pytest.raises(TroveError, match="malformed"):
        await asyncio.wait_for(upload, 5)
    assert EOF not in fake.kinds(rid)


async def test_an_upload_over_the_limit_is_cancelled_and_stops_writing(fixture: Fixture) -> None:
    fake = fixture.fake
    upload = asyncio.create_task(fake.session.write("x.bin", body(b"a" * 600, b"b" * 600), 1000))
    rid = await opened(fake)
    fd = os.open(fixture.root / "temp", os.O_WRONLY | os.O_CREAT, 0o644)
    hand(fixture.agent_end, rid, fd)
    os.close(fd)
    fake.session.feed(frame(rid, DATA, b"fd"))
    while CANCEL not in fake.kinds(rid):
        await asyncio.sleep(0.01)
    fake.session.feed(
        frame(rid, RESULT, json.dumps({"ok": False, "code": "cancelled", "rel": "x.bin"}).encode())
    )
    with pytest.raises(TroveError):
        await asyncio.wait_for(upload, 5)
    assert EOF not in fake.kinds(rid)
    assert os.stat(fixture.root / "temp").st_size <= 600


async def test_a_close_cancelled_under_a_read_is_cancelled_and_closes_when_the_read_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The descriptor is never closed under a read in flight (a thread's pread), and a caller
    cancelled while its close waits for that read is cancelled, not told the close is done."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    started, release = threading.Event(), threading.Event()
    real_pread = os.pread

    def slow_pread(target: int, size: int, offset: int) -> bytes:
        if target == fd:
            started.set()
            release.wait(5)
        return real_pread(target, size, offset)

    monkeypatch.setattr(os, "pread", slow_pread)
    reader = fds.HandedFile(fd, FileStat(rel="f", is_dir=False, size=10, mtime_ns=0))
    chunks = reader.iter_bytes(0, 10)
    first = asyncio.ensure_future(anext(chunks))
    assert await asyncio.to_thread(started.wait, 5)
    closing = asyncio.ensure_future(reader.aclose())
    await asyncio.sleep(0.01)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    os.fstat(fd)  # still open: the read goes on
    release.set()
    assert await first == b"x" * 10
    await asyncio.sleep(0)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    await chunks.aclose()
