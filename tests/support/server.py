"""A real Trove server on 127.0.0.1 (uvicorn in a thread) with a bootstrapped workspace."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from trove_api.cli import event_loop
from trove_api.context import AppContext
from trove_api.httpserver import server_config
from trove_api.main import create_app
from trove_api.services.keys import create_workspace
from trove_core.settings import Settings


@dataclass
class LiveServer:
    base_url: str
    settings: Settings
    ctx: AppContext
    workspace_id: str
    admin_key: str
    workspace_key: str

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir


class _ThreadedServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns signals
        pass


def make_data_dir() -> Path:
    """A data dir sandbox uids can traverse (pytest's tmp dirs are 0700 under a 0700 parent)."""
    path = Path(tempfile.mkdtemp(prefix="trove-test-", dir="/tmp"))
    path.chmod(0o711)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def start_server(**overrides: Any) -> Iterator[LiveServer]:
    """Start a server with its own data dir; ``overrides`` are Settings fields."""
    given = overrides.pop("data_dir", None)
    # A data dir passed in belongs to the caller (e.g. a restart on the same data): keep it.
    data_dir = given or make_data_dir()
    port = _free_port()
    if os.environ.get("TROVE_TEST_BACKEND") == "kubernetes":
        # `make e2e`: the same tests against the Kubernetes runtime (skips without a cluster).
        from tests.support.cluster import cluster

        overrides = {**cluster().settings_overrides(), **overrides}
    settings = Settings(data_dir=data_dir, host="127.0.0.1", port=port, **overrides)
    ctx = AppContext.open(settings)
    report = getattr(ctx.runtime, "startup_report", None)
    if report is not None:
        report()
    new = create_workspace(ctx.db, "test")
    config = server_config(  # the limits and proxy trust of `trove-server serve`
        create_app(settings, ctx),
        settings,
        log_level="warning",
        loop=event_loop(settings.runtime),  # as `trove-server serve` runs it
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = _ThreadedServer(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    # Ready as `/readyz` means it: listening, and the first sweep has resolved what a crash left.
    while not (server.started and ctx.sweeper.first_pass_done.is_set()):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(
            base_url=f"http://127.0.0.1:{port}",
            settings=settings,
            ctx=ctx,
            workspace_id=new.workspace_id,
            admin_key=new.admin_key.api_key,
            workspace_key=new.workspace_key.api_key,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        if given is None and os.environ.get("TROVE_TEST_KEEP_DATA") != "1":
            shutil.rmtree(data_dir, ignore_errors=True)
