"""The API's half of the channel does not trust the stream: capped frames, capped buffering,
its own exec deadline, and a dropped channel on any protocol break.

A fake transport stands in for the agent where a fault must be forged (the session's parser
is pure: bytes in, frames out); the last tests run the real agent.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.unit.test_agent import agent, spec
from trove_api.runtimes.channel import protocol as channel
from trove_api.runtimes.channel import session
from trove_api.runtimes.channel.frames import HEADER, FrameError, FrameReader
from trove_api.runtimes.channel.protocol import CANCEL, DATA, HELLO, OPEN, RESULT, STDERR, STDOUT
from trove_api.runtimes.channel.session import AgentSession
from trove_core.errors import ChannelLostError


def frame(rid: int, kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), rid, kind) + payload


def result(rid: int, **body: object) -> bytes:
    return frame(rid, RESULT, json.dumps({"ok": True, **body}).encode())


class FakeAgent:
    """Records what the session sends; the test plays the agent by feeding bytes back."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, bytes]] = []
        self.aborted = 0
        self.opened = asyncio.Event()
        self.session = AgentSession(self.receive, abort=self.abort)
        self.session.feed(frame(0, HELLO, b'{"version": 1}'))

    async def receive(self, data: bytes | bytearray | memoryview) -> None:
        reader = FrameReader()
        for rid, kind, payload in reader.feed(bytes(data)):
            self.sent.append((rid, kind, payload))
            if kind == OPEN:
                self.opened.set()

    def abort(self) -> None:
        self.aborted += 1

    def kinds(self, rid: int) -> list[int]:
        return [kind for r, kind, _ in self.sent if r == rid]


async def opened(fake: FakeAgent) -> int:
    await asyncio.wait_for(fake.opened.wait(), 5)
    fake.opened.clear()
    return fake.sent[-1][0]


EXEC_RESULT = {
    "exit_code": 0,
    "timed_out": False,
    "stdout_truncated": False,
    "stderr_truncated": False,
    "duration_ms": 1,
}

BREAKS = {
    "oversized_frame": HEADER.pack(channel.MAX_FRAME_BYTES + 1, 1, STDOUT),
    "oversized_result": HEADER.pack(channel.MAX_RESULT_BYTES + 1, 1, RESULT),
    "4_GiB_header": b"\xff\xff\xff\xff\x00\x00\x00\x01\x05",
    "unknown_type": frame(1, 99, b"x"),
    "client_type_from_the_agent": frame(1, OPEN, b"{}"),
    "result_not_json": frame(1, RESULT, b"\xff not json"),
    "result_not_an_object": frame(1, RESULT, b"[1, 2]"),
    "hello_on_a_request_id": frame(1, HELLO, b"{}"),
}


@pytest.mark.parametrize("fault", sorted(BREAKS))
async def test_a_protocol_break_drops_the_channel(fault: str) -> None:
    fake = FakeAgent()
    running = asyncio.create_task(fake.session.exec(spec("true"), 1 << 20))
    rid = await opened(fake)
    assert rid == 1
    fake.session.feed(frame(rid, STDOUT, b"partial "))
    fake.session.feed(BREAKS[fault])
    with pytest.raises(ChannelLostError):
        await asyncio.wait_for(running, 5)
    assert fake.session.closed
    assert fake.aborted == 1
    assert fake.session.requests == {}
    with pytest.raises(ChannelLostError):  # the owner reconnects: this session takes no more calls
        await fake.session.exec(spec("true"), 1 << 20)
    fake.session.feed(result(1, **EXEC_RESULT))  # bytes after the break are not parsed
    assert fake.aborted == 1


async def test_an_oversized_header_is_refused_before_its_payload_arrives() -> None:
    reader = FrameReader(channel.FRAME_LIMITS)
    with pytest.raises(FrameError):
        reader.feed(HEADER.pack(channel.MAX_FRAME_BYTES + 1, 1, DATA))


async def test_frames_for_ids_not_open_are_counted_and_dropped() -> None:
    fake = FakeAgent()
    fake.session.feed(frame(42, STDOUT, b"x" * 1000) + result(43, **EXEC_RESULT))
    assert fake.session.stray_frames == 2
    assert not fake.session.closed
    running = asyncio.create_task(fake.session.exec(spec("echo ok"), 1 << 20))
    rid = await opened(fake)
    fake.session.feed(frame(rid, STDOUT, b"ok\n") + result(rid, **EXEC_RESULT))
    out = await asyncio.wait_for(running, 5)
    assert out.stdout == b"ok\n"


async def test_exec_output_is_cut_at_the_calls_limit_whatever_the_agent_sends() -> None:
    fake = FakeAgent()
    running = asyncio.create_task(fake.session.exec(spec("yes", limit=100), 1 << 20))
    rid = await opened(fake)
    for _ in range(50):  # 3.2 MB of stdout the agent should never have sent
        fake.session.feed(frame(rid, STDOUT, b"y" * 65536) + frame(rid, STDERR, b"e" * 10))
        await asyncio.sleep(0)
    fake.session.feed(result(rid, **EXEC_RESULT))
    out = await asyncio.wait_for(running, 5)
    assert out.stdout == b"y" * 100
    assert out.stderr == b"e" * 100
    assert out.stdout_truncated
    assert out.stderr_truncated


async def test_too_much_waiting_for_one_request_drops_the_channel() -> None:
    fake = FakeAgent()
    request = await fake.session.open({"op": "pread", "handle": 1, "start": 0, "end": 1})
    chunk = frame(request.id, DATA, b"d" * (1 << 20))
    for _ in range(channel.REQUEST_BUFFER_BYTES // (1 << 20)):
        fake.session.feed(chunk)  # nobody reads: it waits
    assert not fake.session.closed
    fake.session.feed(chunk)
    assert fake.session.closed
    assert fake.aborted == 1
    with pytest.raises(ChannelLostError):  # at once: what waited was let go
        await request.next()


async def test_an_exec_the_agent_does_not_answer_is_cancelled_then_the_channel_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session, "EXEC_GRACE_S", 0.05)
    monkeypatch.setattr(session, "CANCEL_GRACE_S", 0.05)
    fake = FakeAgent()
    with pytest.raises(ChannelLostError):
        await asyncio.wait_for(fake.session.exec(spec("sleep 100", timeout=0.05), 1 << 20), 10)
    assert fake.kinds(1) == [OPEN, CANCEL]
    assert fake.session.closed
    assert fake.aborted == 1


async def test_an_exec_answered_after_the_cancel_keeps_the_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "EXEC_GRACE_S", 0.05)
    monkeypatch.setattr(session, "CANCEL_GRACE_S", 10)
    fake = FakeAgent()
    running = asyncio.create_task(fake.session.exec(spec("sleep 100", timeout=0.05), 1 << 20))
    rid = await opened(fake)
    while fake.kinds(rid) != [OPEN, CANCEL]:
        await asyncio.sleep(0.01)
    fake.session.feed(result(rid, **{**EXEC_RESULT, "exit_code": 137, "timed_out": True}))
    out = await asyncio.wait_for(running, 5)
    assert (out.exit_code, out.timed_out) == (137, True)
    assert not fake.session.closed


# -- with the real agent --------------------------------------------------------------------


async def test_a_forged_header_in_the_agents_stream_drops_the_channel_not_the_api(tmp_path: Path) -> None:
    """What a command that reached the agent's stdout could do (it cannot: test_agent_containment):
    a header announcing 4 GiB. The session refuses it at once, fails the call in flight, and
    closes its end; a new channel works."""
    async with agent(tmp_path) as session:
        running = asyncio.create_task(session.exec(spec("sleep 30"), 1 << 20))
        await asyncio.sleep(0.1)
        session.feed(b"\xff\xff\xff\xff\x00\x00\x00\x01\x05")
        with pytest.raises(ChannelLostError):
            await asyncio.wait_for(running, 10)
        assert session.closed
    async with agent(tmp_path) as fresh:
        out = await fresh.exec(spec("echo alive"), 1 << 20)
        assert out.stdout == b"alive\n"


async def test_the_real_agent_stays_within_the_frame_caps(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    (tmp_path / "big").write_bytes(data)
    async with agent(tmp_path) as session:
        out = await session.exec(spec("head -c 3000000 /dev/zero; echo done >&2", limit=1 << 22), 1 << 20)
        assert (len(out.stdout), out.stderr) == (3_000_000, b"done\n")
        reader = await session.open_file("big")
        assert b"".join([c async for c in reader.iter_bytes(0, len(data))]) == data
        await reader.aclose()
        assert not session.closed
        assert session.stray_frames == 0
