"""Closing the Kubernetes runtime closes every connection to the API server before it returns.

``trove-server serve`` closes the runtime in the app's lifespan and then the event loop. A TLS
connection still shutting down at that moment made uvloop's ``loop.close()`` fail with EBUSY
("Fatal error on transport ... Event loop is closed"), in a CI run whose exec channels
(websockets) had been closed gracefully a moment before. The API server usually answers a TLS
close at once, which hides this; a loopback TCP proxy that holds back its answers makes the
slow peer of that CI run reproducible (the one fault here a real part cannot produce on demand).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

from tests.support.cluster import Cluster
from tests.support.server import make_data_dir
from trove_api.runtimes.kubernetes.kubeapi import KubeApi, load_configuration
from trove_api.runtimes.kubernetes.podexec import WarmChannel
from trove_api.runtimes.kubernetes.runtime import KubernetesRuntime
from trove_core.crd import object_name
from trove_core.runtime import ExecSpec, NamespaceRef
from trove_core.settings import Settings

HELLO = ExecSpec(script="echo hi", stdin=None, timeout_s=30, output_limit=1 << 16)


def open_sockets_to(port: int) -> int:
    """How many of this process's file descriptors are TCP connections (any state) to ``port``."""
    wanted = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port:
                wanted.add(fields[9])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            count += target.startswith("socket:[") and target[8:-1] in wanted
    return count


class SlowPeerProxy:
    """Forwards TCP to the API server; with ``delay_s`` set, the server's bytes arrive that late."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.delay_s = 0.0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SlowPeerProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        writers = [client_w]
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
            writers.append(up_w)
            await asyncio.gather(
                self._pipe(client_r, up_w, slow=False), self._pipe(up_r, client_w, slow=True)
            )
        except (asyncio.CancelledError, OSError):
            pass  # the proxy is closing: this task is ours, nobody awaits its cancellation
        finally:
            for writer in writers:
                writer.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await writer.wait_closed()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, slow: bool) -> None:
        while data := await src.read(65536):
            if slow and self.delay_s:
                await asyncio.sleep(self.delay_s)
            dst.write(data)
            await dst.drain()
        dst.close()


def test_closing_leaves_no_connection_open_behind_a_slow_peer(k8s: Cluster) -> None:
    settings = Settings(data_dir=make_data_dir(), **k8s.settings_overrides())
    ns = NamespaceRef("ws_shutdown_" + secrets.token_hex(4), "slow-peer")

    async def scenario() -> tuple[int, int]:
        runtime = KubernetesRuntime.from_settings(settings)
        try:
            pod = await runtime.control.wait_ready(ns)
        finally:
            await runtime.aclose()
        cfg = load_configuration(settings)
        server = urlsplit(str(cfg.host))
        async with SlowPeerProxy(server.hostname or "127.0.0.1", server.port or 443) as proxy:
            cfg.host = f"https://127.0.0.1:{proxy.port}"  # the API server's certificate names 127.0.0.1
            api = KubeApi(cfg, settings.k8s_namespace)
            channel = await WarmChannel.connect(api, pod)
            assert (await channel.session.exec(HELLO, 1 << 20)).stdout == b"hi\n"
            name = object_name(ns.workspace_id, ns.name)
            live = await api.get_tns(name)
            assert live is not None
            opened = open_sockets_to(proxy.port)
            proxy.delay_s = 1.0
            # A watch given up (as wait_ready gives up at its deadline) closes its connection
            # mid-stream: the TLS close then waits for the peer's answer.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    async for _ in api.watch_tns(name, live["metadata"]["resourceVersion"], 30):
                        pass
            # Then as the runtime's aclose(): its channels, then the client.
            await channel.close()
            await api.aclose()
            return opened, open_sockets_to(proxy.port)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        opened, left = runner.run(scenario())
    assert opened == 2  # the exec channel and the pooled connection of get_tns
    assert left == 0, f"{left} connection(s) to the API server still open after aclose()"
