"""KubernetesRuntime: a TroveNamespace per namespace; exec and files over a warm channel per pod."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

from kubernetes.utils import parse_quantity

from trove_api.logs import detached_task
from trove_api.runtimes.channel import restore as tarcheck
from trove_api.runtimes.channel.ports import AgentPorts
from trove_api.runtimes.channel.processes import AgentProcesses, ProcessClient, ProcessLimits
from trove_api.runtimes.channel.retry import call_once_more_if_lost, stream_once_more_if_lost
from trove_api.runtimes.channel.session import AgentSession
from trove_api.runtimes.kubernetes.fallback import snapshots as fallback_snapshots
from trove_api.runtimes.kubernetes.fallback.files import PodFiles
from trove_api.runtimes.kubernetes.kubeapi import KubeApi, load_configuration
from trove_api.runtimes.kubernetes.namespaces import NamespaceControl, activity_stamp, build_template
from trove_api.runtimes.kubernetes.podexec import WarmChannel, fresh_exec
from trove_api.runtimes.kubernetes.pool_channels import PoolChannels
from trove_api.runtimes.kubernetes.rollout import Hold, Rollout
from trove_core.errors import AgentMissingError, PodGoneError, UnavailableError
from trove_core.runtime import (
    ExecOutput,
    ExecSpec,
    FileReader,
    FileStat,
    NamespaceRef,
    SandboxSize,
    SandboxUsage,
)
from trove_core.settings import Settings

log = logging.getLogger(__name__)

ACTIVITY_FLUSH_S = 60.0


def activity_flush_s(idle_suspend_s: int) -> float:
    """How often activity reaches the CR: once a minute, or a quarter of a shorter idle limit.

    The operator judges idleness by the recorded stamp alone: a stamp older than the limit
    would get a namespace that is in use suspended.
    """
    return min(ACTIVITY_FLUSH_S, idle_suspend_s / 4) if idle_suspend_s else ACTIVITY_FLUSH_S


AGENT_RECHECK_S = 300.0


def quantity(value: str) -> Decimal:
    """A Kubernetes quantity ("500m", "1Gi") as a number; 0 for one that is not (not reported)."""
    try:
        parsed: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    except ValueError:
        return Decimal(0)
    return parsed


def pod_size(settings: Settings) -> SandboxSize:
    """What each sandbox pod is given: its CPU limit rounded up (never below one CPU; the agent
    inside counts the node's CPUs, which the pod may not use) and its memory limit."""
    return SandboxSize(
        cpu_count=max(1, math.ceil(quantity(settings.k8s_cpu_limit))),
        memory_mb=int(quantity(settings.k8s_memory_limit)) // (1024 * 1024),
    )


class KubernetesRuntime(AgentProcesses, AgentPorts):
    def __init__(self, settings: Settings, api: KubeApi) -> None:
        self.settings = settings
        self.api = api
        self.file_bytes = settings.exec_file_mb * 1024 * 1024
        self.process_limits = ProcessLimits.from_settings(settings)
        self._channels: dict[str, WarmChannel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Pods whose image lacks the agent: exec falls back to fresh streams until this time.
        self._no_agent: dict[str, tuple[str, float]] = {}
        self._activity: dict[str, float] = {}
        self._flushed: dict[str, float] = {}
        self.activity_flush_s = activity_flush_s(settings.k8s_idle_suspend_s)
        self._housekeeper: asyncio.Task[None] | None = None
        self._roller: asyncio.Task[None] | None = None
        self.rollout = Rollout(
            api,
            policy=settings.k8s_rollout,
            wanted=build_template(settings),
            idle_after_s=settings.k8s_rollout_idle_s,
            hold=self._hold,
            last_active=self._activity.get,
        )
        self.control = NamespaceControl(api, settings, self.rollout)
        self.pool_channels = PoolChannels(api, settings.k8s_pool_channels)

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesRuntime:
        return cls(settings, KubeApi(load_configuration(settings), settings.k8s_namespace))

    # -- channels -------------------------------------------------------------------------------

    def _touch(self, name: str) -> None:
        # A dict write only: the annotation is patched later, by the housekeeper.
        self._activity[name] = time.time()
        if self._housekeeper is None or self._housekeeper.done():
            self._housekeeper = detached_task(self._housekeeping(), name="trove-k8s-housekeeping")
            self.pool_channels.start()

    async def _session(self, ns: NamespaceRef) -> AgentSession:
        name = ns.object_name
        self._touch(name)
        channel = self._channels.get(name)
        if channel is not None and channel.open:
            channel.session.last_used = time.monotonic()
            return channel.session
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            channel = self._channels.get(name)
            if channel is not None and channel.open:
                return channel.session
            for attempt in range(3):
                pod = await self.control.wait_ready(ns)
                try:
                    channel = self.pool_channels.take(pod) or await WarmChannel.connect(self.api, pod)
                except PodGoneError:
                    # Status still named a pod that was just deleted: wait for the new one.
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                except AgentMissingError:
                    self._no_agent[name] = (pod, time.monotonic() + AGENT_RECHECK_S)
                    raise
                self._channels[name] = channel
                return channel.session
        raise UnavailableError("The sandbox pod is restarting; retry", retry_after=2)

    def start_background(self) -> None:
        """At server start: warm-pool pods get their agent channels before the first call, and
        namespaces on an older sandbox template are rolled to this server's."""
        self.pool_channels.start()
        if self._roller is None:
            self._roller = detached_task(self.rollout.run(), name="trove-k8s-rollout")

    @contextlib.asynccontextmanager
    async def _hold(self, name: str, *, force: bool) -> AsyncIterator[Hold]:
        """Keep this replica's calls off a namespace while the rollout patches it.

        With its lock held no new call can open a channel, and with the channel taken out of
        the table no call finds the open one; a call already in flight (or a background
        process the sandbox runs for us) makes it busy. Once patched the channel is closed:
        the pod it leads to is being replaced. ``force`` (the ``immediate`` policy) waits for
        nothing and only closes the channel afterwards.
        """
        lock = self._locks.setdefault(name, asyncio.Lock())
        held = Hold()
        if force:
            yield held
            if held.rolled:
                await self._drop_channel(name)
            return
        if lock.locked():  # a call is waiting for the pod (or connecting to it)
            held.busy = True
            yield held
            return
        async with lock:
            channel = self._channels.pop(name, None)
            if channel is not None and channel.open:
                held.busy = bool(channel.session.requests) or await ProcessClient(channel.session).running()
                # A call that took the session just before it left the table shows up now.
                held.busy = held.busy or bool(channel.session.requests)
            try:
                yield held
            finally:
                if channel is not None:
                    if held.rolled or not channel.open:
                        await channel.close()
                    else:
                        self._channels.setdefault(name, channel)

    async def _drop_channel(self, name: str) -> None:
        channel = self._channels.pop(name, None)
        if channel is not None:
            await channel.close()  # ends the agent, and with it the processes it runs

    # -- Runtime --------------------------------------------------------------------------------

    async def provision(self, ns: NamespaceRef) -> None:
        await self.control.ensure(ns)

    async def stop_sandbox(self, ns: NamespaceRef) -> None:
        await self._drop_channel(ns.object_name)

    async def suspend(self, ns: NamespaceRef) -> None:
        await self.stop_sandbox(ns)
        # The operator deletes the pod (the PVC stays), as after the idle limit; the next call
        # wakes it through NamespaceControl.wait_ready. An object already gone is left gone.
        await self.api.patch_tns(ns.object_name, {"spec": {"suspended": True}})

    async def deprovision(self, ns: NamespaceRef) -> None:
        name = ns.object_name
        await self.stop_sandbox(ns)
        for state in (self._activity, self._flushed, self._no_agent):
            state.pop(name, None)
        # The CR's pod and PVC are owned by it: garbage collection removes them once the
        # operator has let the object go (kopf's finalizer).
        await self.api.delete_tns(name)

    async def set_egress(self, ns: NamespaceRef, blocked: Sequence[str], *, dns: bool = True) -> None:
        # The operator renders spec.egressBlocked/egressDns into the sandbox's NetworkPolicy; the
        # object keeps them, so a rebuilt pod (or a restarted server) is under the same rules.
        current = (await self.control.ensure(ns)).get("spec") or {}
        spec = {"egressBlocked": list(blocked), "egressDns": dns}
        if (current.get("egressBlocked", []), current.get("egressDns", True)) == (list(blocked), dns):
            # Every server start re-applies every E2B sandbox's stored rules: the object keeps
            # them, so that is one read each, not a write as well.
            return
        await self.api.patch_tns(ns.object_name, {"spec": spec})

    async def usage(self, ns: NamespaceRef) -> SandboxUsage:
        target = await self._target(ns)
        if isinstance(target, str):  # an image without the agent: nothing to ask
            return SandboxUsage(cpu_count=0, cpu_ns=0, mem_used=0, mem_total=0)
        # The pod's own cgroup is the sandbox's: the agent reads it from inside.
        return await target.usage(cgroup=True)

    def sandbox_size(self) -> SandboxSize:
        return pod_size(self.settings)

    async def sandbox_state(self, ns: NamespaceRef) -> str:
        """The TroveNamespace's phase as the dashboard shows it (read only: wakes nothing)."""
        obj = await self.api.get_tns(ns.object_name)
        if obj is None:
            return "absent"
        phase = str((obj.get("status") or {}).get("phase") or "Pending")
        suspended = bool((obj.get("spec") or {}).get("suspended"))
        return "Suspended" if suspended and phase != "Suspended" else phase

    async def _target(self, ns: NamespaceRef) -> AgentSession | str:
        """The pod's warm agent session; or, when its image has no agent, the pod (for fresh execs)."""
        name = ns.object_name
        fallback = self._no_agent.get(name)
        if fallback is not None and fallback[1] > time.monotonic():
            self._touch(name)
            return await self.control.wait_ready(ns)
        try:
            return await self._session(ns)
        except AgentMissingError:
            return await self.control.wait_ready(ns)

    async def exec(self, ns: NamespaceRef, spec: ExecSpec) -> ExecOutput:
        target = await self._target(ns)
        if isinstance(target, str):
            return await fresh_exec(self.api, target, spec)
        return await target.exec(spec, self.file_bytes)

    async def write(self, ns: NamespaceRef, rel: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        session = await self._files(ns)
        return await session.write(rel, chunks, max_bytes)

    async def open_file(self, ns: NamespaceRef, rel: str) -> FileReader:
        return await call_once_more_if_lost(lambda: self._open_file(ns, rel))

    async def _open_file(self, ns: NamespaceRef, rel: str) -> FileReader:
        return await (await self._files(ns)).open_file(rel)

    async def list_dir(
        self, ns: NamespaceRef, rel: str, *, recursive: bool, max_entries: int, max_depth: int
    ) -> tuple[list[FileStat], bool]:
        async def listing() -> tuple[list[FileStat], bool]:
            session = await self._files(ns)
            return await session.list(rel, recursive=recursive, max_entries=max_entries, max_depth=max_depth)

        return await call_once_more_if_lost(listing)

    async def delete(self, ns: NamespaceRef, rel: str) -> None:
        session = await self._files(ns)
        await session.delete(rel)

    async def _files(self, ns: NamespaceRef) -> AgentSession | PodFiles:
        target = await self._target(ns)
        return PodFiles.in_pod(self.api, target) if isinstance(target, str) else target

    async def export_tar(self, ns: NamespaceRef) -> AsyncIterator[bytes]:
        async def tarball() -> AsyncIterator[bytes]:
            files = await self._files(ns)
            source = (
                fallback_snapshots.export_tar(files) if isinstance(files, PodFiles) else files.export_tar()
            )
            async for chunk in source:
                yield chunk

        # Not once more after a lost channel midway: the retry this replaces did, and would
        # have sent the tarball's first bytes twice (a corrupt snapshot).
        async for chunk in stream_once_more_if_lost(tarball):
            yield chunk

    async def import_tar(self, ns: NamespaceRef, chunks: AsyncIterator[bytes]) -> int:
        files = await self._files(ns)
        target: tarcheck.RestoreTarget = (
            fallback_snapshots.ShellRestore(files)
            if isinstance(files, PodFiles)
            else tarcheck.AgentRestore(files)
        )
        return await tarcheck.restore(target, chunks)

    def path_aliases(self, ns: NamespaceRef) -> Sequence[str]:
        # /workspace is the real, stable path inside the pod; no host path is visible there.
        return []

    # -- housekeeping ---------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Record activity at most every ``activity_flush_s`` per namespace; close idle channels."""
        period = min(self.activity_flush_s, self.settings.k8s_channel_idle_s / 2)
        while True:
            await asyncio.sleep(period)
            try:
                await self._flush_activity()
                await self._close_idle()
                await self.pool_channels.expire()
            except Exception:  # the next round is the retry
                log.exception("kubernetes runtime housekeeping failed")

    async def _flush_activity(self) -> None:
        now = time.time()
        # A call still waiting for its pod, or a command still running, is activity too.
        busy = [name for name, lock in self._locks.items() if lock.locked()]
        busy += [
            name for name, channel in self._channels.items() if channel.open and channel.session.requests
        ]
        for name in busy:
            self._activity[name] = now
        for name, seen in list(self._activity.items()):
            if seen <= self._flushed.get(name, 0) or now - self._flushed.get(name, 0) < self.activity_flush_s:
                continue
            stamp = activity_stamp(seen)
            with contextlib.suppress(UnavailableError):
                await self.control.touch(name, stamp)
                self._flushed[name] = now

    async def _close_idle(self) -> None:
        cutoff = time.monotonic() - self.settings.k8s_channel_idle_s
        for name, channel in list(self._channels.items()):
            idle = channel.session.last_used < cutoff and not channel.session.requests
            # Closing the channel ends the agent, and with it the processes it runs.
            if not channel.open or (idle and not await ProcessClient(channel.session).running()):
                self._channels.pop(name, None)
                await channel.close()

    async def aclose(self) -> None:
        for task in (self._housekeeper, self._roller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.pool_channels.aclose()
        await asyncio.gather(*(c.close() for c in self._channels.values()), return_exceptions=True)
        self._channels.clear()
        await self.api.aclose()
