"""A port inside the sandbox: trove-agent's ``port_connect`` through ``open_port``, over pipes.

The real agent runs unsandboxed as in test_agent, so its ``127.0.0.1`` is this process's: the
"sandbox server" is an asyncio server here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.unit.test_agent import agent
from trove_api.runtimes.channel import AGENT_SOURCE
from trove_api.runtimes.channel.ports import WINDOW, PortStream, open_port
from trove_core.errors import InvalidRequestError, SandboxPortClosedError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def read_all(stream: PortStream) -> bytes:
    seen = bytearray()
    while chunk := await stream.receive():
        seen += chunk
    return bytes(seen)


def waiting(stream: PortStream) -> int:
    """Bytes from the server the API holds unread."""
    return sum(len(piece) for piece in stream._inbox)


async def test_bytes_both_ways_and_half_close(tmp_path: Path) -> None:
    async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to the client's EOF
        writer.write(data.upper())
        writer.close()

    async with serving(upper) as port, agent(tmp_path) as session:
        stream = await open_port(session, port)
        try:
            await stream.send(b"hello " * 100_000)  # over a window: paced by the agent's ACKs
            await stream.send_eof()
            assert await read_all(stream) == b"HELLO " * 100_000
        finally:
            await stream.aclose()
        # The channel is still good for the next one.
        again = await open_port(session, port)
        await again.send_eof()
        assert await read_all(again) == b""
        await again.aclose()


async def test_nothing_listening_is_port_closed(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening
        async with agent(tmp_path) as session:
            with pytest.raises(SandboxPortClosedError, match=str(port)):
                await open_port(session, port)


async def test_a_server_flooding_a_reader_that_does_not_read_is_held_to_a_window(tmp_path: Path) -> None:
    written = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError):
            while written < 64 * 1024 * 1024:
                writer.write(chunk)
                await writer.drain()
                written += len(chunk)

    async with serving(flood) as port, agent(tmp_path) as session:
        stream = await open_port(session, port)
        try:
            # The agent sends its window, then waits for acknowledgements that never come.
            while waiting(stream) < WINDOW:
                await asyncio.sleep(0.01)
            for _ in range(50):
                await asyncio.sleep(0.01)
                assert waiting(stream) <= WINDOW + 65536
            assert written < 64 * 1024 * 1024  # the server is held back too (its socket is full)
            # Reading on releases the rest.
            total = 0
            while total < 8 * 1024 * 1024:
                total += len(await stream.receive())
                assert waiting(stream) <= WINDOW + 65536
        finally:
            await stream.aclose()


async def test_bad_ports_refused(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        for port in (0, 70000):
            with pytest.raises(InvalidRequestError, match="no port"):
                await open_port(session, port)


async def test_an_agent_from_before_port_connect_says_so(tmp_path: Path) -> None:
    old = tmp_path / "old_agent.py"
    old.write_text(AGENT_SOURCE.read_text().replace("def op_port_connect(", "def op_gone_port_connect("))
    root = tmp_path / "root"
    root.mkdir()
    async with agent(root, script=old) as session:
        with pytest.raises(SandboxPortClosedError, match="older than get_host"):
            await open_port(session, 1)
