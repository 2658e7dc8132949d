"""Per-namespace disk quotas: each namespace an ext4 image, loop-mounted at first use.

The kernel enforces the size: a command that writes past it gets ENOSPC inside its sandbox,
and the API's own writes into the namespace fail the same way (507 ``storage_full``). The
root filesystem here has no project quotas, so a loop-mounted image per namespace is the
mechanism (``mount -o loop`` needs root).

An image's filesystem holds ``root/`` (the namespace: ``/workspace`` in the sandbox) and
``staging/`` (upload temp files, restore trees): ``rename()`` and a restore's exchange only
work within one filesystem, and the namespace's root is now a filesystem of its own.

Images are preallocated by default (``fallocate``: allocated, not written), so the disk holds
every namespace's quota and none can overcommit it; a namespace that does not fit beside the
data dir's reserve is refused (507). Sparse images (``TROVE_NAMESPACE_DISK_PREALLOCATE=false``)
take only the space their files use and may overcommit the disk: once the disk is full, writes
inside an image fail at writeback (I/O errors in the namespace, not ENOSPC).

Mounts are shared by every process on the data dir (replicas, ``trove-server snapshots``), so
none owns one: each holds a shared ``flock`` on the mount dir while it runs, and the last to
stop (the one that gets the lock exclusively) unmounts them all; mounts still busy are detached
lazily. Mounts left by a server killed with -9 are simply reused by the next one (its lock died
with it) and unmounted when that one stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import subprocess
import threading
from pathlib import Path

from trove_core.diskspace import STORAGE_FULL_ERRNOS, DiskReserve
from trove_core.errors import StorageFullError, VolumeError

log = logging.getLogger(__name__)

IMAGE_SUFFIX = ".ext4"
_MOUNT_OPTIONS = "loop,nosuid,nodev,noatime"
# -m 0: no root-reserved blocks, the quota is the size. Lazy init writes little up front;
# nodiscard keeps mke2fs from punching the preallocated blocks back out of the file.
_MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]
_TOOLS = ("mkfs.ext4", "mount", "umount")
_COMMAND_TIMEOUT_S = 60


class Volumes:
    def __init__(
        self, base: Path, size_bytes: int, *, preallocate: bool = True, reserve: DiskReserve | None = None
    ) -> None:
        self.images = base / "images"
        self.mounts = base / "mounts"
        # New namespaces get an image only when a size is set; existing images are always used.
        self.size_bytes = size_bytes
        self.preallocate = preallocate
        self.reserve = reserve or DiskReserve.off()
        self._lock = threading.Lock()
        self._presence: int | None = None
        # Mountpoints laid out by this process: later calls only check that they are still mounted.
        self._ready: set[Path] = set()
        if os.geteuid() == 0 and (size_bytes > 0 or self.images.is_dir()):
            # Held shared while this process may use mounts; exclusive means nobody else does.
            self.mounts.mkdir(mode=0o711, parents=True, exist_ok=True)
            self._presence = os.open(self.mounts / ".in-use", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._presence, fcntl.LOCK_SH)

    @property
    def creates_images(self) -> bool:
        # Without root nothing can be mounted: new namespaces stay plain directories (warned).
        return self.size_bytes > 0 and os.geteuid() == 0

    def image(self, workspace_id: str, name: str) -> Path:
        return self.images / workspace_id / (name + IMAGE_SUFFIX)

    def mountpoint(self, workspace_id: str, name: str) -> Path:
        return self.mounts / workspace_id / name

    def has_image(self, workspace_id: str, name: str) -> bool:
        return self.image(workspace_id, name).is_file()

    def root(self, workspace_id: str, name: str) -> Path:
        return self.mountpoint(workspace_id, name) / "root"

    def staging(self, workspace_id: str, name: str) -> Path:
        return self.mountpoint(workspace_id, name) / "staging"

    # -- start-up and shutdown ---------------------------------------------------------------

    def check(self) -> list[str]:
        """Warnings, or an error if quotas are asked for but this host cannot mount images."""
        if self.size_bytes <= 0:
            return []
        if os.geteuid() != 0:
            return [
                "TROVE_NAMESPACE_DISK_MB is set, but loop mounts need root: namespaces have NO disk "
                "quota, and a command can fill the data dir's disk."
            ]
        missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
        if missing:
            raise VolumeError(
                f"TROVE_NAMESPACE_DISK_MB needs {', '.join(missing)} (apt-get install e2fsprogs "
                "util-linux), or set TROVE_NAMESPACE_DISK_MB=0 to run without disk quotas."
            )
        return []

    def mounted(self) -> list[Path]:
        prefix = str(self.mounts.resolve()) + "/"
        return [Path(point) for point in _mount_points() if point.startswith(prefix)]

    def sweep_mounted(self) -> None:
        """Start-up of the serving process: clear the staging areas of images already mounted.

        Only when no other process uses the data dir: another replica's uploads may be in flight.
        """
        if self._presence is None:
            return
        try:
            fcntl.flock(self._presence, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._presence, fcntl.LOCK_SH)  # a failed upgrade may have dropped it
            return
        try:
            for mountpoint in self.mounted():
                _sweep(mountpoint / "staging")
        finally:
            fcntl.flock(self._presence, fcntl.LOCK_SH)

    def release(self) -> None:
        """Unmount every namespace image, unless another process on this data dir still runs."""
        if self._presence is None:
            return
        with self._lock:
            try:
                fcntl.flock(self._presence, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("another server uses %s: its namespace images stay mounted", self.mounts)
            else:
                for mountpoint in sorted(self.mounted(), reverse=True):
                    _unmount(mountpoint)
            finally:
                self._ready.clear()
                os.close(self._presence)
                self._presence = None

    # -- per namespace -------------------------------------------------------------------------

    def ensure(self, workspace_id: str, name: str, uid: int | None, *, create: bool) -> Path | None:
        """The namespace's mounted ``root/``, making the image first if ``create``; None if it has none."""
        image = self.image(workspace_id, name)
        mountpoint = self.mountpoint(workspace_id, name)
        if mountpoint in self._ready and os.path.ismount(mountpoint):
            return mountpoint / "root"
        with self._lock:
            if not image.is_file():
                if not create:
                    return None
                self._make_image(image)
            if not os.path.ismount(mountpoint):
                if os.geteuid() != 0:
                    raise VolumeError(
                        f"Namespace {workspace_id}/{name} lives in a disk image, which only a server "
                        "running as root can mount."
                    )
                _make_traversable(mountpoint)
                _run(["mount", "-o", _MOUNT_OPTIONS, str(image), str(mountpoint)])
                # Mounted just now, so nobody is writing there: what a crash left can go.
                _sweep(mountpoint / "staging")
            root = self._lay_out(mountpoint, uid)
            self._ready.add(mountpoint)
            return root

    def remove(self, workspace_id: str, name: str) -> None:
        """Unmount the namespace's image and delete it (its sandbox has stopped); idempotent."""
        mountpoint = self.mountpoint(workspace_id, name)
        with self._lock:
            self._ready.discard(mountpoint)
            _unmount(mountpoint)
            with contextlib.suppress(OSError):  # absent, or still busy: left empty, harmless
                mountpoint.rmdir()
            # A lazily detached image is freed by the kernel once its last user is gone.
            self.image(workspace_id, name).unlink(missing_ok=True)

    def _make_image(self, image: Path) -> None:
        image.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(image.parent.parent, 0o700)
        # Made under a temporary name: a crash mid-mkfs never leaves a half-made image in use.
        temp = image.with_name(f".{image.name}.{secrets.token_hex(4)}")
        if self.preallocate:
            self.reserve.check(self.size_bytes)
        try:
            with open(temp, "xb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.truncate(self.size_bytes)
                if self.preallocate:
                    _allocate(handle.fileno(), self.size_bytes)
            _run([*_MKFS, str(temp)])
            os.rename(temp, image)
        finally:
            temp.unlink(missing_ok=True)

    def _lay_out(self, mountpoint: Path, uid: int | None) -> Path:
        # The image's own root: traversable (bwrap runs as the namespace uid), not listable.
        os.chmod(mountpoint, 0o711)
        root = mountpoint / "root"
        staging = mountpoint / "staging"
        for directory in (root, staging):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
        if uid is not None and root.stat().st_uid != uid:
            os.chown(root, uid, uid)
        os.chmod(staging, 0o700)
        return root


def _allocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in STORAGE_FULL_ERRNOS:
            raise StorageFullError(
                f"No room on the server's disk for a new namespace of {size // (1024 * 1024)} MiB"
            ) from exc
        raise


def _sweep(staging: Path) -> None:
    # Temp files of uploads and restores a crash interrupted; never in the namespace itself.
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _make_traversable(mountpoint: Path) -> None:
    mountpoint.mkdir(mode=0o711, parents=True, exist_ok=True)
    for directory in (mountpoint.parent, mountpoint.parent.parent):
        os.chmod(directory, 0o711)


def _mount_points() -> list[str]:
    points = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if len(fields) > 4:
                # Field 5 is the mount point, with spaces and the like escaped as octal.
                points.append(fields[4].encode().decode("unicode_escape"))
    return points


def _unmount(mountpoint: Path) -> None:
    if not os.path.ismount(mountpoint):
        return
    try:
        _run(["umount", str(mountpoint)])
    except VolumeError as exc:
        # Busy (a process still inside): detach now, the kernel finishes once it is gone.
        log.warning("%s: %s; detaching it lazily", mountpoint, exc.detail)
        with contextlib.suppress(VolumeError):
            _run(["umount", "-l", str(mountpoint)])


def _run(argv: list[str]) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, timeout=_COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VolumeError(f"{argv[0]} failed: {exc}") from exc
    if result.returncode != 0:
        # The details name host paths: they go to the log, the client gets the request id.
        log.error("%s failed: %s", " ".join(argv), result.stderr.decode(errors="replace").strip())
        raise VolumeError(f"{argv[0]} of a namespace volume failed (see the server log)")
