"""Which event loop `trove-server serve` runs on (see ``cli.event_loop`` for the measurements)."""

from __future__ import annotations

import asyncio
import importlib

from trove_api.cli import event_loop


def test_local_runtime_stays_on_the_stdlib_loop() -> None:
    assert event_loop("local") == "asyncio"


def test_kubernetes_runtime_runs_on_uvloop_and_it_is_installed() -> None:
    assert event_loop("kubernetes") == "uvloop"
    uvloop = importlib.import_module("uvloop")  # a dependency of the server (uvicorn[standard])
    loop = uvloop.new_event_loop()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
    finally:
        loop.close()
