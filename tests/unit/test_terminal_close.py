"""A terminal whose sandbox stops answering still ends with ``terminal.closed``.

Seen once on Kubernetes under load (test_terminal_socket: no terminal.closed within 30 s); the
cause was not pinned, and a sandbox that never answers a signal cannot be produced on demand by
a real one, so the runtime here is a stand-in that hangs (the only fake in this file)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

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
