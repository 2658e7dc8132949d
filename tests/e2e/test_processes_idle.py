"""A pod's warm channel is closed when idle, which ends its agent: not while the agent runs a process."""

from __future__ import annotations

import asyncio
import secrets

from tests.support.cluster import Cluster
from tests.support.server import make_data_dir
from trove_api.runtimes.kubernetes.runtime import KubernetesRuntime
from trove_core.runtime import NamespaceRef, ProcessSpec
from trove_core.settings import Settings


async def test_a_running_process_keeps_its_channel_open(k8s: Cluster) -> None:
    idle_s = 1.0
    settings = Settings(
        data_dir=make_data_dir(), **{**k8s.settings_overrides(), "k8s_channel_idle_s": idle_s}
    )
    ns = NamespaceRef("ws_procs_" + secrets.token_hex(4), "idle-channel")
    runtime = KubernetesRuntime.from_settings(settings)
    try:
        await runtime.provision(ns)
        sleeper = await runtime.start_process(ns, ProcessSpec(argv=("sleep", "1000")))
        channel = runtime._channels[ns.object_name]
        # Several housekeeping rounds (every idle_s / 2) with no call at all.
        await asyncio.sleep(idle_s * 6)
        assert runtime._channels.get(ns.object_name) is channel
        assert channel.open
        [listed] = await runtime.list_processes(ns)
        assert (listed.pid, listed.running) == (sleeper.pid, True)
        await runtime.signal_process(ns, sleeper.pid, 9)
        await runtime.wait_process(ns, sleeper.pid)
        # Nothing runs now: the next idle round closes it.
        for _ in range(100):
            if ns.object_name not in runtime._channels:
                break
            await asyncio.sleep(idle_s / 2)
        assert ns.object_name not in runtime._channels
    finally:
        await runtime.aclose()
