"""The terminal's WebSocket spoken raw (the `websockets` client against the live server): who may
open one, and that closing it leaves no shell behind (checked with the official trove-sdk)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.dashboard.test_security import page_csrf, sign_in
from tests.support.sdk import admin, client
from tests.support.server import LiveServer, start_server

T = TypeVar("T")
SHELL_MARK = "--rcfile workspace/.trove/init.sh"


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """On a thread of its own: Playwright's sync API may own this thread's event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class Signed:
    def __init__(self, server: LiveServer, http: httpx.Client) -> None:
        self.server = server
        self.cookie = f"trove_session={http.cookies['trove_session']}"
        self.csrf = page_csrf(http)

    def url(self, namespace: str, **query: str) -> str:
        ws_base = self.server.base_url.replace("http://", "ws://", 1)
        params = {"csrf": self.csrf, "rows": "24", "cols": "80", **query}
        return f"{ws_base}/dashboard/namespaces/{namespace}/terminal?{urlencode(params)}"

    def connect(
        self,
        namespace: str,
        *,
        origin: str | None = None,
        cookie: bool = True,
        small: bool = False,
        **query: str,
    ) -> Any:
        headers = {"Cookie": self.cookie} if cookie else {}
        options: dict[str, Any] = {}
        if small:  # a slow browser: a small fixed receive buffer (loopback autotunes to 32 MB)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            parts = urlsplit(self.server.base_url)
            sock.connect((parts.hostname, parts.port))
            sock.setblocking(False)
            options = {"sock": sock, "max_queue": 1}
        return connect(
            self.url(namespace, **query),
            origin=origin or self.server.base_url,  # type: ignore[arg-type]
            additional_headers=headers,
            open_timeout=30,
            **options,
        )


@contextmanager
def _signed(server: LiveServer, api_key: str) -> Iterator[Signed]:
    with httpx.Client(base_url=server.base_url) as http:
        assert sign_in(http, api_key).status_code == 303
        yield Signed(server, http)


@pytest.fixture
def admin_ws(server: LiveServer) -> Iterator[Signed]:
    with _signed(server, server.admin_key) as signed:
        yield signed


def _refused(attempt: Callable[[], Any]) -> int:
    async def go() -> int:
        try:
            async with attempt():
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    return _run(go())


async def _read_until(socket: ClientConnection, needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        frame = await asyncio.wait_for(socket.recv(), 30)
        assert isinstance(frame, bytes), "PTY output comes as binary frames"
        seen += frame
    return seen


async def _drain(socket: ClientConnection) -> None:
    """Read until the server closes (``ConnectionClosed``)."""
    while True:
        await asyncio.wait_for(socket.recv(), 30)


def test_refused_without_a_session(admin_ws: Signed, namespace: str) -> None:
    assert _refused(lambda: admin_ws.connect(namespace, cookie=False)) == 403


def test_refused_from_a_foreign_origin(admin_ws: Signed, namespace: str) -> None:
    # The cookie rides along on a cross-site handshake: only Origin tells it apart.
    assert _refused(lambda: admin_ws.connect(namespace, origin="http://evil.example")) == 403
    assert _refused(lambda: admin_ws.connect(namespace, csrf="forged")) == 403


def test_a_locked_key_cannot_open_another_namespace(
    server: LiveServer, namespace: str, mint_locked: Callable[[str], str]
) -> None:
    locked = mint_locked(namespace)
    with _signed(server, locked) as signed:
        assert _refused(lambda: signed.connect(namespace + "-other")) == 403
        assert _refused(lambda: signed.connect(namespace)) == 101  # its own namespace: allowed


def test_a_bad_size_is_refused(admin_ws: Signed, namespace: str) -> None:
    assert _refused(lambda: admin_ws.connect(namespace, rows="0")) == 403


def test_typing_resizing_and_closing_leaves_no_shell(
    server: LiveServer, admin_ws: Signed, namespace: str
) -> None:
    def shells() -> list[str]:
        with client(server, namespace) as sdk:
            return [line for line in sdk.exec("ps -eo pid,args").splitlines() if SHELL_MARK in line]

    async def session() -> list[str]:
        async with admin_ws.connect(namespace) as socket:
            await socket.send(b"echo $((6*7))\r")
            await _read_until(socket, b"42")
            await socket.send('{"type": "resize", "rows": 40, "cols": 120}')
            await socket.send(b"stty size\r")
            await _read_until(socket, b"40 120")
            return await asyncio.to_thread(shells)

    while_open = _run(session())
    assert len(while_open) == 1, while_open  # ps sees the terminal's shell from an exec
    _wait_for_event(server, namespace, "terminal.closed")
    assert shells() == []


def _wait_for_event(server: LiveServer, namespace: str, type_: str) -> dict[str, Any]:
    """Until the event is in the feed (the server emits it after the shell has been reaped)."""
    url = f"/v1/workspaces/{server.workspace_id}/events"
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.admin_key}"}
    ) as http:
        for _ in range(600):
            page = http.get(url, params={"namespace": namespace, "types": type_}).json()
            if page["events"]:
                return dict(page["events"][0])
            time.sleep(0.05)
    raise AssertionError(f"no {type_} event for {namespace}")


def test_revoking_the_key_ends_its_terminal(server: LiveServer, namespace: str) -> None:
    """Like its SSE streams: a revoked key keeps no shell open (hostile: a leaked key, revoked)."""
    with admin(server) as adm:
        minted = adm.create_key(f"term-{namespace}", namespace=namespace)

    async def session() -> int | None:
        with _signed(server, minted.api_key) as signed:
            async with signed.connect(namespace) as socket:
                await socket.send(b"echo ready-$((1+1))\r")
                await _read_until(socket, b"ready-2")
                with admin(server) as adm:
                    await asyncio.to_thread(adm.revoke_key, minted.key_id)
                with pytest.raises(ConnectionClosed) as closed:
                    await _drain(socket)
                return closed.value.rcvd.code if closed.value.rcvd else None

    assert _run(session()) == 1008
    _wait_for_event(server, namespace, "terminal.closed")
    with client(server, namespace) as sdk:
        assert SHELL_MARK not in sdk.exec("ps -eo pid,args")


def test_signing_out_ends_the_terminal(namespace: str) -> None:
    """A sign-out (or expiry) ends the socket too, at the next look-up of the session."""
    with start_server(sse_keepalive_s=0.2) as small, httpx.Client(base_url=small.base_url) as http:
        assert sign_in(http, small.workspace_key).status_code == 303
        signed = Signed(small, http)

        async def session() -> int | None:
            async with signed.connect(namespace) as socket:
                await socket.send(b"echo up-$((2+2))\r")
                await _read_until(socket, b"up-4")
                out = await asyncio.to_thread(http.post, "/dashboard/logout", data={"csrf": signed.csrf})
                assert out.status_code == 303
                with pytest.raises(ConnectionClosed) as closed:
                    await _drain(socket)
                return closed.value.rcvd.code if closed.value.rcvd else None

        assert _run(session()) == 1008


def test_a_terminal_session_counts_as_a_change_for_daily_snapshots(
    server: LiveServer, admin_ws: Signed, namespace: str
) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/a.txt", "v1")
        sdk.create_snapshot(label="before the terminal")
    changed = server.ctx.snapshot_jobs._changed_namespaces
    assert (server.workspace_id, namespace) not in changed()

    async def session() -> None:
        async with admin_ws.connect(namespace) as socket:
            await socket.send(b"echo v2 > workspace/a.txt; echo wrote-$((1+2))\r")
            await _read_until(socket, b"wrote-3")

    _run(session())
    _wait_for_event(server, namespace, "terminal.closed")
    assert (server.workspace_id, namespace) in changed()  # the next daily snapshot takes it


def test_exit_in_the_shell_closes_the_socket(server: LiveServer, admin_ws: Signed, namespace: str) -> None:
    async def session() -> int | None:
        async with admin_ws.connect(namespace) as socket:
            await socket.send(b"exit 3\r")
            with pytest.raises(ConnectionClosed) as closed:
                await _drain(socket)
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert _run(session()) == 1000
    closed = _wait_for_event(server, namespace, "terminal.closed")
    assert closed["data"]["exit_code"] == 3
    opened = _wait_for_event(server, namespace, "terminal.opened")
    assert opened["data"]["pid"] == closed["data"]["pid"]
    assert (opened["data"]["rows"], opened["data"]["cols"]) == (24, 80)


def test_a_browser_that_does_not_read_does_not_hold_the_shell_up(
    server: LiveServer, admin_ws: Signed, namespace: str
) -> None:
    """20 MB of output to a socket nobody reads: the shell is not held up (the runtime drops
    the oldest output instead of blocking it)."""
    flood = 20_000_000

    def finished() -> None:
        with client(server, namespace) as sdk:
            for _ in range(1200):
                if sdk.exec("cat workspace/done.txt 2>/dev/null || true").strip() == "done-2":
                    return
                time.sleep(0.05)
        raise AssertionError("the shell never got past the flood")

    async def session() -> bytes:
        async with admin_ws.connect(namespace, small=True) as socket:
            flood_then_mark = (
                f"head -c {flood} /dev/zero | tr '\\0' x; echo; "
                "echo done-$((1+1)) > workspace/done.txt; echo fin-$((3+3))\r"
            )
            await socket.send(flood_then_mark.encode())
            await asyncio.to_thread(finished)  # not one frame read meanwhile
            return await _read_until(socket, b"fin-6")

    seen = _run(session())
    # What reaches the idle browser depends on how much the socket buffers on the way hold (all
    # of it on some hosts, with nothing skipped): the shell not being held up is the point, and
    # the browser still gets the end of the output.
    assert b"\nfin-6" in seen  # the output line (the echoed command reads fin-$((3+3)))
