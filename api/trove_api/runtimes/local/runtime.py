"""LocalRuntime: namespaces are host directories, commands run in bubblewrap as per-namespace uids."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trove_api.runtimes.channel.processes import ProcessClient, ProcessLimits
from trove_api.runtimes.channel.session import AgentSession
from trove_api.runtimes.local import fs, netns, tarball
from trove_api.runtimes.local.cgroups import Cgroups
from trove_api.runtimes.local.process import run_captured
from trove_api.runtimes.local.sandbox import (
    Limits,
    build_bwrap_argv,
    build_drop_privileges,
    build_enter_netns,
    build_limits_wrapper,
    build_shell,
)
from trove_api.runtimes.local.seccomp_filter import SeccompUnavailableError, compile_filter
from trove_api.runtimes.local.volumes import Volumes
from trove_core.diskspace import DiskReserve
from trove_core.errors import (
    IsADirectoryError_,
    PathNotFoundError,
    PayloadTooLargeError,
    SandboxUnavailableError,
)
from trove_core.paths import display
from trove_core.runtime import (
    ExecOutput,
    ExecSpec,
    FileStat,
    NamespaceRef,
    ProcessEnd,
    ProcessInfo,
    ProcessOutput,
    ProcessSpec,
    PtySize,
)
from trove_core.settings import Settings

log = logging.getLogger(__name__)

# One thread hop per chunk: 1 MiB keeps that overhead small (curl downloads ran ~1.4x faster
# than with 256 KiB) while a stream still holds only about one chunk in memory.
_READ_CHUNK = 1024 * 1024
# bwrap reads the seccomp filter from this fd, which the limits wrapper opens per exec.
_SECCOMP_FD = 3


@dataclass
class _LocalFile:
    fd: int
    stat: FileStat
    closed: bool = False

    async def iter_bytes(self, start: int, end: int) -> AsyncIterator[bytes]:
        position = start
        while position < end:
            chunk = await asyncio.to_thread(os.pread, self.fd, min(_READ_CHUNK, end - position), position)
            if not chunk:
                return
            position += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        # Idempotent: closing an fd number twice could close a file another thread just opened.
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                os.close(self.fd)


class LocalRuntime:
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
        process_limits: ProcessLimits | None = None,
    ) -> None:
        self.process_limits = process_limits or ProcessLimits()
        self.sandbox = sandbox
        self.network = network
        # Why `outbound` degraded to no network here (said loudly at start-up), or None.
        self.network_unavailable = netns.unavailable_reason() if sandbox and network == "outbound" else None
        self.networks = (
            netns.SandboxNetworks(network_allow)
            if sandbox and network == "outbound" and not self.network_unavailable
            else None
        )
        self.uid_base = uid_base
        self.as_root = os.geteuid() == 0
        data_dir.mkdir(parents=True, exist_ok=True)
        base = _sandbox_base(data_dir.resolve(), self.as_root and sandbox)
        self.root = base / "namespaces"
        # Staging sits beside the namespaces: same filesystem, so rename() is atomic.
        self.staging = base / "staging"
        # Namespaces with a disk quota are images mounted under base; the rest plain directories.
        self.reserve = reserve if reserve is not None else DiskReserve.off()
        self.volumes = Volumes(base, disk_quota_bytes, preallocate=preallocate, reserve=self.reserve)
        # Names in staging that a call of this process is still using: never swept.
        self._staged: set[str] = set()
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
            process_limits=ProcessLimits.from_settings(settings),
        )

    # -- start-up -----------------------------------------------------------------------

    def startup_report(self) -> list[str]:
        """Start-up of the serving process: clear staging, check the sandbox, return warnings.

        Only the serving process sweeps staging; a maintenance command run beside a live server
        must not delete that server's in-flight uploads and restores. Raises if the sandbox
        cannot run.
        """
        self._sweep_staging()
        self.volumes.sweep_mounted()
        warnings = self.volumes.check()
        if not self.sandbox:
            warnings.append(
                "TROVE_SANDBOX=none: commands run UNSANDBOXED as the server's own user, with "
                "full access to everything it can touch. Use this only for development."
            )
            return warnings
        if shutil.which("bwrap") is None:
            raise SandboxUnavailableError(
                "bubblewrap (bwrap) is not installed. Install it (apt-get install bubblewrap) "
                "or set TROVE_SANDBOX=none to run commands unsandboxed (development only)."
            )
        probe = self.root / f".probe-{secrets.token_hex(4)}"
        probe.mkdir(mode=0o700)
        try:
            if self.as_root:
                os.chown(probe, self.uid_base, self.uid_base)
            argv = self._argv(str(probe), self.uid_base if self.as_root else None, [], "true")
            result = subprocess.run(argv, capture_output=True, timeout=30, check=False)
        finally:
            shutil.rmtree(probe, ignore_errors=True)
        if result.returncode != 0 and b"Permission denied" in result.stderr and self.as_root:
            raise SandboxUnavailableError(
                f"sandbox uids cannot reach {self.root}: every parent directory of "
                "TROVE_DATA_DIR must be traversable by other users (chmod o+x), or choose "
                "a data dir elsewhere (e.g. under /var/lib or /srv). bwrap said: "
                + result.stderr.decode(errors="replace").strip()
            )
        if result.returncode != 0:
            raise SandboxUnavailableError(
                "bubblewrap cannot create a sandbox here: "
                + result.stderr.decode(errors="replace").strip()
                + ". Enable unprivileged user namespaces, or set TROVE_SANDBOX=none "
                "(development only)."
            )
        if not self.as_root:
            warnings.append(
                "Running as non-root: commands are sandboxed, but every namespace runs as this "
                f"server's uid ({os.geteuid()}), so a sandbox escape would reach the others."
            )
        if self.seccomp_path is None:
            warnings.append("TROVE_SANDBOX_SECCOMP=off: sandboxes run without a syscall filter.")
        warnings += self._network_report()
        if self.cgroups.mode == "none":
            warnings.append(
                "No writable cgroup hierarchy: memory and process limits fall back to per-process rlimits."
            )
        return warnings

    def _network_report(self) -> list[str]:
        if self.network_unavailable:
            return [
                f"TROVE_SANDBOX_NETWORK=outbound, but {self.network_unavailable}: sandboxes get NO "
                "network at all (as with `off`), never the host's."
            ]
        if self.networks is not None and not self.networks.startup_check():
            return [
                "slirp4netns could not give a sandbox a network (see the log above): execs "
                "run without network until it can."
            ]
        return []

    def _sweep_staging(self, stale_s: float | None = None) -> int:
        # Uploads and restores interrupted by a crash leave temp files here, never in a
        # namespace. At start-up all of it is left over; later only what no call of this
        # process uses and nothing touched for ``stale_s``.
        cutoff = None if stale_s is None else time.time() - stale_s
        removed = 0
        for entry in self.staging.iterdir():
            if entry.name in self._staged:
                continue
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
        """The periodic sweep (``services.sweeper``): staging leftovers older than ``stale_s``."""
        return await asyncio.to_thread(self._sweep_staging, stale_s)

    # -- namespaces ---------------------------------------------------------------------

    def _dir(self, ns: NamespaceRef) -> Path:
        if self.volumes.has_image(ns.workspace_id, ns.name):
            return self.volumes.root(ns.workspace_id, ns.name)
        return self._plain_dir(ns)

    def _plain_dir(self, ns: NamespaceRef) -> Path:
        return self.root / ns.workspace_id / ns.name

    def _mounted_dir(self, ns: NamespaceRef) -> Path:
        """``_dir``, with the namespace's image mounted if it has one (reads after a restart)."""
        root = self.volumes.ensure(ns.workspace_id, ns.name, self._uid(ns), create=False)
        return root if root is not None else self._plain_dir(ns)

    def _staging(self, ns: NamespaceRef) -> Path:
        # Temp files must sit on the namespace's filesystem: rename() cannot cross filesystems.
        if self.volumes.has_image(ns.workspace_id, ns.name):
            return self.volumes.staging(ns.workspace_id, ns.name)
        return self.staging

    def _uid(self, ns: NamespaceRef) -> int | None:
        return ns.uid if self.as_root and ns.uid is not None else None

    async def provision(self, ns: NamespaceRef) -> None:
        await asyncio.to_thread(self._provision, ns)

    def _provision(self, ns: NamespaceRef) -> None:
        # A namespace from before quotas were turned on stays a plain directory.
        create_image = self.volumes.creates_images and not self._plain_dir(ns).exists()
        if self.volumes.ensure(ns.workspace_id, ns.name, self._uid(ns), create=create_image) is not None:
            return
        workspace_dir = self.root / ns.workspace_id
        workspace_dir.mkdir(mode=0o711, exist_ok=True)
        os.chmod(workspace_dir, 0o711)
        directory = self._plain_dir(ns)
        directory.mkdir(mode=0o700, exist_ok=True)
        uid = self._uid(ns)
        if uid is not None:
            st = directory.stat()
            if st.st_uid != uid:
                os.chown(directory, uid, uid)
        os.chmod(directory, 0o700)

    def path_aliases(self, ns: NamespaceRef) -> Sequence[str]:
        # /workspace inside the sandbox is a real, stable path and stays as it is; host paths
        # (e.g. in /proc/self/mountinfo, or everywhere when unsandboxed) must not leak.
        if self.sandbox:
            return [str(self._dir(ns))]
        return [str(self._view(ns) / "workspace"), str(self._dir(ns))]

    def _view(self, ns: NamespaceRef) -> Path:
        return self.root / ns.workspace_id / f".view-{ns.name}"

    # -- exec -----------------------------------------------------------------------------

    def _argv(
        self,
        directory: str,
        uid: int | None,
        cgroup_procs: list[str],
        script: str,
        netns_path: str | None = None,
    ) -> list[str]:
        seccomp_path = self.seccomp_path
        inputs = [(_SECCOMP_FD, str(seccomp_path))] if seccomp_path else []
        return (
            build_limits_wrapper(cgroup_procs, self.limits, inputs)
            + build_enter_netns(netns_path)
            + build_drop_privileges(uid)
            + build_bwrap_argv(
                directory,
                own_netns=netns_path is not None,
                seccomp_fd=_SECCOMP_FD if seccomp_path else None,
            )
            + build_shell(script)
        )

    async def exec(self, ns: NamespaceRef, spec: ExecSpec) -> ExecOutput:
        directory = self._dir(ns)
        if not self.sandbox:
            # Unsandboxed: run beside the namespace dir, which is visible as workspace/.
            return await self._exec_unsandboxed(ns, spec)
        key = _cgroup_key(ns)
        cgroup_procs = await asyncio.to_thread(self.cgroups.prepare, key)
        networks = self.networks
        netns_path = await asyncio.to_thread(networks.acquire, key) if networks else None
        try:
            argv = self._argv(str(directory), self._uid(ns), cgroup_procs, spec.script, netns_path)
            return await run_captured(
                argv,
                stdin=spec.stdin,
                timeout_s=spec.timeout_s,
                output_limit=spec.output_limit,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        finally:
            if networks:
                networks.release(key)

    async def _exec_unsandboxed(self, ns: NamespaceRef, spec: ExecSpec) -> ExecOutput:
        # The namespace directory is named after the namespace; expose it as workspace/ via a
        # per-namespace view directory holding one symlink.
        view = self._view(ns)
        await asyncio.to_thread(_ensure_view, view, self._dir(ns))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._dir(ns)),
            "LANG": "C.UTF-8",
        }
        return await run_captured(
            build_limits_wrapper([], self.limits) + build_shell(spec.script),
            stdin=spec.stdin,
            timeout_s=spec.timeout_s,
            output_limit=spec.output_limit,
            env=env,
            cwd=str(view),
            kill_group_on_exit=True,
        )

    # -- files ----------------------------------------------------------------------------

    async def write(self, ns: NamespaceRef, rel: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        owner = fs.Owner(self._uid(ns))
        directory = await asyncio.to_thread(self._mounted_dir, ns)
        real = await asyncio.to_thread(fs.resolve, directory, rel)
        head, last = fs.split(real)
        temp_name = f"upload-{secrets.token_hex(8)}"
        self._staged.add(temp_name)
        staging_fd = os.open(self._staging(ns), os.O_RDONLY | os.O_DIRECTORY)
        temp_fd = os.open(
            temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=staging_fd
        )
        size = 0
        committed = False
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLargeError(
                        f"{display(rel)} is larger than the limit of {max_bytes} bytes"
                    )
                # Stops at the data dir's reserve, so the database can still commit (507).
                self.reserve.check(len(chunk))
                view = memoryview(chunk)
                while view:
                    written = os.write(temp_fd, view)
                    view = view[written:]
            await asyncio.to_thread(self._commit, ns, temp_fd, staging_fd, temp_name, head, last, owner, real)
            committed = True
            return size
        except OSError as exc:
            raise fs.translate(exc, rel) from exc
        finally:
            os.close(temp_fd)
            if not committed:
                with contextlib.suppress(OSError):
                    os.unlink(temp_name, dir_fd=staging_fd)
            os.close(staging_fd)
            self._staged.discard(temp_name)

    def _commit(
        self,
        ns: NamespaceRef,
        temp_fd: int,
        staging_fd: int,
        temp_name: str,
        head: str,
        last: str,
        owner: fs.Owner,
        real: str,
    ) -> None:
        if not last:
            raise IsADirectoryError_("Is a directory: workspace/")
        owner.apply(temp_fd)
        os.fsync(temp_fd)
        root_fd = fs.open_root(self._dir(ns))
        try:
            parent_fd = fs.open_dir(root_fd, head, create=True, owner=owner)
        finally:
            os.close(root_fd)
        try:
            with contextlib.suppress(FileNotFoundError):
                existing = os.stat(last, dir_fd=parent_fd, follow_symlinks=False)
                if stat.S_ISDIR(existing.st_mode):
                    raise IsADirectoryError_(f"Is a directory: {display(real)}")
            # rename() replaces the name itself: a symlink swapped in here is replaced, not followed.
            os.rename(temp_name, last, src_dir_fd=staging_fd, dst_dir_fd=parent_fd)
            os.fsync(parent_fd)
        finally:
            os.close(parent_fd)

    async def open_file(self, ns: NamespaceRef, rel: str) -> _LocalFile:
        return await asyncio.to_thread(self._open_file, ns, rel)

    def _open_file(self, ns: NamespaceRef, rel: str) -> _LocalFile:
        directory = self._mounted_dir(ns)
        if not directory.is_dir():
            raise PathNotFoundError(f"Path not found: {display(rel)}")
        real = fs.resolve(directory, rel)
        if not real:
            raise IsADirectoryError_(f"Is a directory: {display(rel)}")
        head, last = fs.split(real)
        root_fd = fs.open_root(directory)
        try:
            parent_fd = fs.open_dir(root_fd, head)
        finally:
            os.close(root_fd)
        try:
            # O_NONBLOCK: opening a FIFO the agent made must not wait for a writer (it is refused
            # below as not a regular file); it is cleared again once the fd is known to be a file.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open(last, flags, dir_fd=parent_fd)
        except OSError as exc:
            raise fs.translate(exc, rel) from exc
        finally:
            os.close(parent_fd)
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            raise IsADirectoryError_(f"Is a directory: {display(rel)}")
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise IsADirectoryError_(f"Not a regular file: {display(rel)}")
        os.set_blocking(fd, True)
        return _LocalFile(fd=fd, stat=fs.stat_to_file(rel, st))

    async def list_dir(
        self, ns: NamespaceRef, rel: str, *, recursive: bool, max_entries: int, max_depth: int
    ) -> tuple[list[FileStat], bool]:
        return await asyncio.to_thread(self._list_dir, ns, rel, recursive, max_entries, max_depth)

    def _list_dir(
        self, ns: NamespaceRef, rel: str, recursive: bool, max_entries: int, max_depth: int
    ) -> tuple[list[FileStat], bool]:
        directory = self._mounted_dir(ns)
        if not directory.is_dir():
            if rel:
                raise PathNotFoundError(f"Path not found: {display(rel)}")
            return [], False
        real = fs.resolve(directory, rel)
        root_fd = fs.open_root(directory)
        try:
            entries, truncated = fs.list_entries(
                root_fd, real, recursive=recursive, max_entries=max_entries, max_depth=max_depth
            )
        finally:
            os.close(root_fd)
        if real != rel:
            # Report entries under the name the caller used, not the symlink's target.
            prefix = f"{real}/" if real else ""
            base = f"{rel}/" if rel else ""
            entries = [FileStat(base + e.rel[len(prefix) :], e.is_dir, e.size, e.mtime_ns) for e in entries]
        return entries, truncated

    async def delete(self, ns: NamespaceRef, rel: str) -> None:
        await asyncio.to_thread(self._delete, ns, rel)

    def _delete(self, ns: NamespaceRef, rel: str) -> None:
        directory = self._mounted_dir(ns)
        if not directory.is_dir():
            raise PathNotFoundError(f"Path not found: {display(rel)}")
        real = fs.resolve(directory, rel, follow_last=False)
        root_fd = fs.open_root(directory)
        try:
            fs.remove(root_fd, real)
        finally:
            os.close(root_fd)

    # -- snapshots ------------------------------------------------------------------------

    def export_tar(self, ns: NamespaceRef) -> AsyncIterator[bytes]:
        return tarball.export_tar(self._dir(ns))

    async def import_tar(self, ns: NamespaceRef, chunks: AsyncIterator[bytes]) -> int:
        await self.provision(ns)
        return await tarball.import_tar(
            self._staging(ns),
            self._dir(ns),
            self._uid(ns),
            chunks,
            check_space=self.reserve.check,
            busy=self._staged,
        )

    # -- processes that outlive a call (the namespace's warm agent) --------------------------

    async def _session(self, ns: NamespaceRef) -> AgentSession:
        # TEMPORARY (h-procs): the warm local agent (helper `localagent`) provides the real one;
        # the lead drops this stub when merging.
        raise NotImplementedError("the local runtime's warm agent session is not merged yet")

    async def start_process(self, ns: NamespaceRef, spec: ProcessSpec) -> ProcessInfo:
        return await ProcessClient(await self._session(ns)).start(spec, self.process_limits)

    async def process_output(
        self, ns: NamespaceRef, pid: int, cursor: int = 0
    ) -> AsyncIterator[ProcessOutput | ProcessEnd]:
        async for item in ProcessClient(await self._session(ns)).output(pid, cursor):
            yield item

    async def write_stdin(self, ns: NamespaceRef, pid: int, data: bytes) -> None:
        await ProcessClient(await self._session(ns)).write_stdin(pid, data)

    async def close_stdin(self, ns: NamespaceRef, pid: int) -> None:
        await ProcessClient(await self._session(ns)).close_stdin(pid)

    async def resize_pty(self, ns: NamespaceRef, pid: int, size: PtySize) -> None:
        await ProcessClient(await self._session(ns)).resize(pid, size)

    async def signal_process(self, ns: NamespaceRef, pid: int, signum: int) -> None:
        await ProcessClient(await self._session(ns)).signal(pid, signum)

    async def wait_process(self, ns: NamespaceRef, pid: int) -> int:
        return await ProcessClient(await self._session(ns)).wait(pid)

    async def list_processes(self, ns: NamespaceRef) -> list[ProcessInfo]:
        return await ProcessClient(await self._session(ns)).list()

    async def aclose(self) -> None:
        if self.networks:
            await asyncio.to_thread(self.networks.close)
        await asyncio.to_thread(self.cgroups.release)
        # After the cgroups: their processes are gone, so the namespaces' mounts are not busy.
        await asyncio.to_thread(self.volumes.release)


def _traversable_by_others(path: Path) -> bool:
    for directory in [path, *path.parents]:
        if directory.exists() and not os.stat(directory).st_mode & stat.S_IXOTH:
            return False
    return True


def _sandbox_base(data_dir: Path, needs_traversal: bool) -> Path:
    """Where namespace directories live: the data dir, unless sandbox uids cannot reach it.

    Sandboxes run as unprivileged uids and bubblewrap binds the namespace directory by path,
    so every parent must be traversable (o+x). A data dir under a private home (``/root`` is
    0700) is not; then the namespaces live under /var/lib/trove, linked from the data dir.
    """
    if not needs_traversal or _traversable_by_others(data_dir):
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    base = Path("/var/lib/trove/sandboxes") / digest
    base.mkdir(parents=True, exist_ok=True)
    for parent in (Path("/var/lib/trove"), Path("/var/lib/trove/sandboxes")):
        os.chmod(parent, 0o711)
    link = data_dir / "namespaces"
    if not link.is_symlink() and not link.exists():
        link.symlink_to(base / "namespaces")
    log.warning(
        "%s is not reachable by sandbox uids (a parent lacks o+x); namespace directories live in %s instead",
        data_dir,
        base,
    )
    return base


def _cgroup_key(ns: NamespaceRef) -> str:
    return f"{ns.workspace_id}.{ns.name}"


def _ensure_view(view: Path, target: Path) -> None:
    view.mkdir(mode=0o700, exist_ok=True)
    link = view / "workspace"
    if not link.is_symlink():
        link.symlink_to(target)
