"""A terminal whose sandbox stops answering, or whose helper tasks do not end, still closes
with ``terminal.closed``.

Seen on Kubernetes and locally under load (test_terminal_socket: no terminal.closed within
30 s): the revocation watch swallowed its cancel (Python 3.11's ``wait_for``, see
test_event_hub), so the socket handler waited on it for ever. A sandbox that never answers a
signal and a task that ignores its cancel cannot be produced on demand by real parts, so the
runtime, service and socket here are stand-ins (the only fakes in this file)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from trove_api.routers.dashboard import terminal as terminal_router
from trove_api.services import terminal
from trove_api.services.terminal import TerminalService, TerminalSession


class HangingRuntime:
    async def signal_process(self, *_: Any) -> None:
        await asyncio.Event().wait()  # never answers


class Emitted:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def emit(self, **event: Any) -> None:
        self.events.append(event)


def test_a_sandbox_that_never_answers_still_gets_terminal_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(terminal, "CLOSE_LIMIT_S", 0.05)
    emitted = Emitted()
    service = TerminalService(HangingRuntime(), None, emitted, None)  # type: ignore[arg-type]
    caller: Any = type("Caller", (), {"workspace_id": "ws-1", "actor": "someone"})()
    session = TerminalSession(caller, "alice", None, 42, time.monotonic())  # type: ignore[arg-type]
    asyncio.run(service.close(session))
    assert [(e["type_"], e["data"]["pid"], e["data"]["exit_code"]) for e in emitted.events] == [
        ("terminal.closed", 42, None)
    ]


class StubbornService:
    """Its revocation watch ignores a cancel once (as a 3.11 ``wait_for`` racing a wake-up did)."""

    async def output(self, _: Any) -> Any:
        await asyncio.Event().wait()
        yield  # pragma: no cover

    async def until_revoked(self, _: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # the cancel swallowed: runs on


class GoneBrowser:
    """A socket whose browser has already left."""

    cookies: dict[str, str] = {}
    closed_with: int | None = None

    async def receive(self) -> dict[str, Any]:
        return {"type": "websocket.disconnect", "code": 1000}

    async def close(self, code: int = 1000) -> None:
        self.closed_with = code


def test_a_helper_that_ignores_its_cancel_does_not_keep_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(terminal_router, "HELPERS_STOP_S", 0.05)
    ctx: Any = type("Ctx", (), {"settings": type("S", (), {"sse_keepalive_s": 3600})()})()
    browser = GoneBrowser()

    async def go() -> bool:
        async with asyncio.timeout(10) as hang:  # a hang guard, far beyond the bound
            await terminal_router.serve(browser, ctx, StubbornService(), None)  # type: ignore[arg-type]
        return hang.expired()

    assert asyncio.run(go()) is False, "serve waited for the helper past its bound"
    assert browser.closed_with == 1000
