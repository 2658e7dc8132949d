"""LocalRuntime: namespaces are host directories; one warm sandbox per namespace runs trove-agent.

Every exec and file operation goes to the namespace's agent over the same channel client as the
pods (``runtimes/channel``): path rules, atomic commits, listings and tarballs exist once, in the
agent, which sees only the namespace. The API process keeps what must happen outside it: the
directory or quota image (mounted before the sandbox starts), cgroups, the network namespace, the
data dir's reserve, and the warm set's lifecycle (``sandboxes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from trove_api.runtimes.channel.ports import AgentPorts
from trove_api.runtimes.channel.processes import AgentProcesses, ProcessLimits
from trove_api.runtimes.channel.restore import AgentRestore, restore
from trove_api.runtimes.channel.retry import call_once_more_if_lost, stream_once_more_if_lost
from trove_api.runtimes.channel.session import AgentSession
from trove_api.runtimes.local import netns, startup
from trove_api.runtimes.local.agent_sandbox import AgentSandbox
from trove_api.runtimes.local.cgroups import Cgroups
from trove_api.runtimes.local.launch import SandboxLauncher
from trove_api.runtimes.local.sandbox import Limits
from trove_api.runtimes.local.sandboxes import WarmSandboxes
from trove_api.runtimes.local.seccomp_filter import SeccompUnavailableError, compile_filter
from trove_api.runtimes.local.spares import SpareSandboxes
from trove_api.runtimes.local.volumes import Volumes
from trove_core.diskspace import DiskReserve
from trove_core.errors import EgressRulesUnsupportedError, SandboxUnavailableError
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

# Upload bytes that can be on their way to the agent but not yet written: two queued frames,
# the widened pipe, the agent's read buffer.
_IN_FLIGHT_BYTES = 4 * 1024 * 1024


class LocalRuntime(AgentProcesses, AgentPorts):
    def __init__(
        self,
        data_dir: Path,
        *,
        sandbox: bool,
        network: Literal["outbound", "off"],
        uid_base: int,
        limits: Limits,
        memory_bytes: int,
        disk_quota_bytes: int = 0,
        preallocate: bool = True,
        reserve: DiskReserve | None = None,
        seccomp: bool = True,
        network_allow: Sequence[str] = (),
        idle_s: float = 300.0,
        max_warm: int = 100,
        process_limits: ProcessLimits | None = None,
        spare_sandbox: bool = False,
    ) -> None:
        self.process_limits = process_limits or ProcessLimits()
        self.sandbox = sandbox
        self.network = network
        # Why `outbound` degraded to no network here (said loudly at start-up), or None.
        self.network_unavailable = netns.unavailable_reason() if sandbox and network == "outbound" else None
        self.networks = (
            netns.SandboxNetworks(network_allow, max_live=max_warm, spares=netns.SPARES)
            if sandbox and network == "outbound" and not self.network_unavailable
            else None
        )
        self.uid_base = uid_base
        self.as_root = os.geteuid() == 0
        data_dir.mkdir(parents=True, exist_ok=True)
        base = startup.sandbox_base(data_dir.resolve(), self.as_root and sandbox)
        self.root = base / "namespaces"
        # Left by versions whose API process staged uploads and restores here; swept, never used.
        self.staging = base / "staging"
        # Namespaces with a disk quota are images mounted under base; the rest plain directories.
        self.reserve = reserve if reserve is not None else DiskReserve.off()
        self.volumes = Volumes(base, disk_quota_bytes, preallocate=preallocate, reserve=self.reserve)
        self.cgroups = Cgroups(memory_bytes, limits.processes)
        if self.cgroups.mode != "none":
            limits = Limits(limits.cpu_seconds, limits.file_bytes, limits.processes, None)
        self.limits = limits
        for directory in (base, self.root, self.staging):
            directory.mkdir(parents=True, exist_ok=True)
        # Traversable but not listable: sandbox uids must reach their own directory only.
        os.chmod(base, 0o711)
        os.chmod(self.root, 0o711)
        os.chmod(self.staging, 0o700)
        self.seccomp_path: Path | None = None
        if sandbox and seccomp:
            self.seccomp_path = base / "seccomp.bpf"
            try:
                compile_filter(self.seccomp_path)
            except SeccompUnavailableError as exc:
                raise SandboxUnavailableError(
                    f"cannot build the sandbox's syscall filter: {exc}. Install libseccomp "
                    "(apt-get install libseccomp2), or set TROVE_SANDBOX_SECCOMP=off to run "
                    "sandboxes without one."
                ) from exc
        self.launcher = SandboxLauncher(
            base,
            sandbox=sandbox,
            limits=limits,
            cgroups=self.cgroups,
            networks=self.networks,
            seccomp_path=self.seccomp_path,
        )
        self.sandboxes = WarmSandboxes(idle_s=idle_s, max_warm=max_warm)
        # Sandboxes started ahead for the next namespaces (``spares``): per-namespace uids
        # (root) and plain directories only, as a quota image cannot be moved into place.
        self.spares = (
            SpareSandboxes(
                self.root,
                lambda key, directory, uid: self.launcher.start(key, directory, uid, directory),
                self.cgroups,
                self.networks,
            )
            if spare_sandbox and sandbox and self.as_root and not self.volumes.creates_images
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalRuntime:
        return cls(
            settings.data_dir,
            sandbox=settings.sandbox == "bwrap",
            network=settings.sandbox_network,
            seccomp=settings.sandbox_seccomp == "on",
            network_allow=[c.strip() for c in settings.sandbox_network_allow.split(",") if c.strip()],
            uid_base=settings.sandbox_uid_base,
            limits=Limits(
                cpu_seconds=settings.exec_cpu_s,
                file_bytes=settings.exec_file_mb * 1024 * 1024,
                processes=settings.exec_pids,
                address_space_bytes=settings.exec_memory_mb * 1024 * 1024,
            ),
            memory_bytes=settings.exec_memory_mb * 1024 * 1024,
            disk_quota_bytes=settings.namespace_disk_mb * 1024 * 1024,
            preallocate=settings.namespace_disk_preallocate,
            reserve=DiskReserve(settings.data_dir, settings.data_reserve_mb * 1024 * 1024),
            idle_s=settings.sandbox_idle_s,
            max_warm=settings.sandbox_max_warm,
            process_limits=ProcessLimits.from_settings(settings),
            spare_sandbox=True,
        )

    # -- start-up and sweeps ----------------------------------------------------------------

    def startup_report(self) -> list[str]:
        """Start-up of the serving process: clear leftovers, check the sandbox, return warnings.

        Only the serving process sweeps; a maintenance command run beside a live server must
        not touch that server's mounts. Raises if the sandbox cannot run.
        """
        self._sweep_staging()
        self.volumes.sweep_mounted()
        if self.spares is not None:
            self.spares.sweep()
        return startup.startup_report(self)

    def _sweep_staging(self, stale_s: float | None = None) -> int:
        # Uploads and restores now stage inside the namespace (the agent's ``.trove-upload-*``,
        # hidden from listings and snapshots, dropped by the agent when it starts). What is
        # swept here is what older versions left in the API's staging directory.
        cutoff = None if stale_s is None else time.time() - stale_s
        removed = 0
        for entry in self.staging.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if cutoff is not None and entry.lstat().st_mtime >= cutoff:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
        return removed

    async def sweep_staging(self, stale_s: float) -> int:
        """The periodic sweep (``services.sweeper``): sandboxes idle past their time, staging leftovers."""
        stopped = await self.sandboxes.stop_idle()
        if stopped:
            log.info("stopped %d idle sandboxes", stopped)
        return await asyncio.to_thread(self._sweep_staging, stale_s)

    # -- namespaces ---------------------------------------------------------------------

    def _dir(self, ns: NamespaceRef) -> Path:
        if self.volumes.has_image(ns.workspace_id, ns.name):
            return self.volumes.root(ns.workspace_id, ns.name)
        return self._plain_dir(ns)

    def _plain_dir(self, ns: NamespaceRef) -> Path:
        return self.root / ns.workspace_id / ns.name

    def _uid(self, ns: NamespaceRef) -> int | None:
        return ns.uid if self.as_root and ns.uid is not None else None

    async def provision(self, ns: NamespaceRef) -> None:
        uid = self._uid(ns)
        if self.spares is not None and uid is not None:
            # A new namespace's directory is created as the spare's (never over one that exists).
            if await asyncio.to_thread(self._spare_can_be_placed, ns):
                await self.spares.place(uid, self._plain_dir(ns))
            # After ``place``: a spare of ``uid`` still starting stays wanted while it waits.
            self.spares.want(uid + 1)  # rows are numbered in order: most likely the next one's
        await asyncio.to_thread(self._provision, ns)

    def _spare_can_be_placed(self, ns: NamespaceRef) -> bool:
        if self.has_storage(ns) or self._plain_dir(ns).is_symlink():
            return False
        self._workspace_dir(ns)
        return True

    def _workspace_dir(self, ns: NamespaceRef) -> None:
        workspace_dir = self.root / ns.workspace_id
        workspace_dir.mkdir(mode=0o711, exist_ok=True)
        os.chmod(workspace_dir, 0o711)

    def _provision(self, ns: NamespaceRef) -> Path:
        """The namespace's directory, created (or its image mounted) if need be."""
        # A namespace from before quotas were turned on stays a plain directory.
        create_image = self.volumes.creates_images and not self._plain_dir(ns).exists()
        mounted = self.volumes.ensure(ns.workspace_id, ns.name, self._uid(ns), create=create_image)
        if mounted is not None:
            return mounted
        self._workspace_dir(ns)
        directory = self._plain_dir(ns)
        directory.mkdir(mode=0o700, exist_ok=True)
        uid = self._uid(ns)
        if uid is not None:
            st = directory.stat()
            if st.st_uid != uid:
                os.chown(directory, uid, uid)
        os.chmod(directory, 0o700)
        return directory

    async def stop_sandbox(self, ns: NamespaceRef) -> None:
        if self.spares is not None:
            await self.spares.drop(self._plain_dir(ns))
        await self.sandboxes.stop(_sandbox_key(ns))

    async def suspend(self, ns: NamespaceRef) -> None:
        await self.stop_sandbox(ns)  # a stopped local sandbox holds nothing but its files

    async def deprovision(self, ns: NamespaceRef) -> None:
        # The sandbox first (or a spare placed for it, its first call never came): its
        # processes hold the directory (and the image's mount) open.
        await self.stop_sandbox(ns)
        if self.networks is not None:
            # A namespace made later under the same name starts without the old rules.
            await asyncio.to_thread(self.networks.set_egress, _sandbox_key(ns), ())
        await asyncio.to_thread(self._remove_storage, ns)
        uid = self._uid(ns)
        if self.spares is not None and uid is not None:
            self.spares.forget(uid)  # its number may be the next namespace's again
            self.spares.fill()

    def _remove_storage(self, ns: NamespaceRef) -> None:
        self.cgroups.remove(_sandbox_key(ns))
        self.volumes.remove(ns.workspace_id, ns.name)
        for directory in (self._plain_dir(ns), self._view(ns)):
            if directory.is_symlink() or not directory.is_dir():
                directory.unlink(missing_ok=True)
            else:
                shutil.rmtree(directory)

    async def usage(self, ns: NamespaceRef) -> SandboxUsage:
        # The agent sums its process tree (no /sys in the sandbox); the namespace's cgroup,
        # where this server made one, knows better: page cache and processes that left the tree.
        figures = await (await self._session(ns)).usage(cgroup=False)
        group = await asyncio.to_thread(self.cgroups.usage, _sandbox_key(ns))
        return replace(figures, **group) if group else figures

    def sandbox_size(self) -> SandboxSize:
        # A sandbox inherits this process's CPU affinity, which is what its agent counts.
        return SandboxSize(
            cpu_count=len(os.sched_getaffinity(0)), memory_mb=self.cgroups.memory_bytes // (1024 * 1024)
        )

    def has_storage(self, ns: NamespaceRef) -> bool:
        """Whether anything of the namespace is left on disk (tests look at the runtime's view)."""
        return self._plain_dir(ns).exists() or self.volumes.has_image(ns.workspace_id, ns.name)

    def path_aliases(self, ns: NamespaceRef) -> Sequence[str]:
        # /workspace inside the sandbox is a real, stable path and stays as it is; host paths
        # (e.g. in /proc/self/mountinfo, or everywhere when unsandboxed) must not leak.
        if self.sandbox:
            return [str(self._dir(ns))]
        return [str(self._view(ns) / "workspace"), str(self._dir(ns))]

    def _view(self, ns: NamespaceRef) -> Path:
        return self.root / ns.workspace_id / f".view-{ns.name}"

    # -- the namespace's sandbox --------------------------------------------------------

    async def _session(self, ns: NamespaceRef) -> AgentSession:
        """The agent session of ``ns``'s warm sandbox, started (directory mounted first) if none runs."""
        return await self.sandboxes.session(_sandbox_key(ns), lambda: self._start_sandbox(ns))

    async def _start_sandbox(self, ns: NamespaceRef) -> AgentSandbox:
        # The quota image is mounted before the sandbox starts: its bind mount then shows it.
        directory = await asyncio.to_thread(self._provision, ns)
        uid = self._uid(ns)
        if self.spares is not None and uid is not None and directory == self._plain_dir(ns):
            claimed = await self.spares.claim(uid, _sandbox_key(ns), directory)
            if claimed is not None:
                return claimed
        sandbox = await self.launcher.start(_sandbox_key(ns), directory, self._uid(ns), self._view(ns))
        if self.spares is not None:
            # As after a claim: the next namespace's spare starts now, not after some later
            # exec (E2B's create starts the sandbox by itself and its commands are no exec).
            self.spares.fill()
        return sandbox

    async def _checked(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        # Stops at the data dir's reserve, so the database can still commit (507). What was sent
        # but may not be on disk yet (frames queued, the pipe, the agent's buffer) counts as spent.
        sent = 0
        async for chunk in chunks:
            self.reserve.check(len(chunk) + min(sent, _IN_FLIGHT_BYTES))
            sent += len(chunk)
            yield chunk

    # -- Runtime ------------------------------------------------------------------------

    async def exec(self, ns: NamespaceRef, spec: ExecSpec) -> ExecOutput:
        session = await self._session(ns)
        file_bytes = self.limits.file_bytes or 0
        try:
            return await session.exec(spec, file_bytes, cpu_s=self.limits.cpu_seconds)
        finally:
            if self.spares is not None:
                self.spares.fill()  # after the call: the spare's start does not slow it down

    async def write(self, ns: NamespaceRef, rel: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        self.reserve.check()
        session = await self._session(ns)
        return await session.write(rel, self._checked(chunks), max_bytes)

    async def open_file(self, ns: NamespaceRef, rel: str) -> FileReader:
        return await call_once_more_if_lost(lambda: self._open_file(ns, rel))

    async def _open_file(self, ns: NamespaceRef, rel: str) -> FileReader:
        return await (await self._session(ns)).open_file(rel)

    async def list_dir(
        self, ns: NamespaceRef, rel: str, *, recursive: bool, max_entries: int, max_depth: int
    ) -> tuple[list[FileStat], bool]:
        async def listing() -> tuple[list[FileStat], bool]:
            session = await self._session(ns)
            return await session.list(rel, recursive=recursive, max_entries=max_entries, max_depth=max_depth)

        return await call_once_more_if_lost(listing)

    async def delete(self, ns: NamespaceRef, rel: str) -> None:
        await (await self._session(ns)).delete(rel)

    async def export_tar(self, ns: NamespaceRef) -> AsyncIterator[bytes]:
        async def tarball() -> AsyncIterator[bytes]:
            async for chunk in (await self._session(ns)).export_tar():
                yield chunk

        async for chunk in stream_once_more_if_lost(tarball):
            yield chunk

    async def import_tar(self, ns: NamespaceRef, chunks: AsyncIterator[bytes]) -> int:
        self.reserve.check()
        session = await self._session(ns)
        return await restore(AgentRestore(session), chunks, check_space=self.reserve.check)

    async def set_egress(self, ns: NamespaceRef, blocked: Sequence[str], *, dns: bool = True) -> None:
        if self.networks is not None:
            await asyncio.to_thread(self.networks.set_egress, _sandbox_key(ns), blocked, dns=dns)
        elif (blocked or not dns) and not self.sandbox:
            # Sandboxed without a network namespace of our own (TROVE_SANDBOX_NETWORK=off, or no
            # root for one), bwrap unshares the network: nothing leaves, every rule already holds.
            # Unsandboxed, commands use the host's network and nothing here could refuse a range.
            raise EgressRulesUnsupportedError(
                "This server cannot enforce egress rules: its commands run unsandboxed "
                "(TROVE_SANDBOX=none), on the host's network"
            )

    async def aclose(self) -> None:
        # Sandboxes first: then nothing holds the networks, cgroups or the namespaces' mounts.
        if self.spares is not None:
            await self.spares.aclose()
        await self.sandboxes.aclose()
        if self.networks:
            await asyncio.to_thread(self.networks.close)
        await asyncio.to_thread(self.cgroups.release)
        await asyncio.to_thread(self.volumes.release)


def _sandbox_key(ns: NamespaceRef) -> str:
    """The namespace's name for its sandbox, cgroup and network namespace."""
    return f"{ns.workspace_id}.{ns.name}"
