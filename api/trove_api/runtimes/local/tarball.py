"""Namespace tarballs for the local runtime: a streamed gzip tar out, a checked extract-and-swap in.

Both directions run ``tarfile`` in stream mode in a worker thread, joined to the event loop by
a small bounded queue, so a snapshot never sits whole in memory or on local disk. Restores
extract into a fresh directory in the runtime's private staging area (same filesystem) and
then exchange it with the namespace directory in one ``renameat2(RENAME_EXCHANGE)``: until
that moment the namespace is untouched, and after it the old tree is simply deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import secrets
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from trove_api.runtimes.threadfeed import Aborted, ThreadFedReader
from trove_core.archive import MemberChecker, MemberPlan, UnsafeMemberError
from trove_core.errors import SnapshotCorruptError, StorageFullError, TroveError

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
QUEUE_DEPTH = 4
# gzip's default level: the speed `tar czf` users know, a far better ratio than level 1.
GZIP_LEVEL = 6
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class _Cancelled(Exception):
    """The consumer of an export went away; the producer thread stops."""


# -- export -------------------------------------------------------------------------------


class _GzipQueueWriter:
    """A write-only file for ``tarfile``: gzip-compresses and hands ~1 MiB chunks to the loop."""

    def __init__(self, put: Callable[[bytes | None], None]) -> None:
        self._put = put
        self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip framing
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += self._zlib.compress(data)
        if len(self._buffer) >= CHUNK:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def finish(self) -> None:
        self._buffer += self._zlib.flush()
        if self._buffer:
            self._put(bytes(self._buffer))
        self._buffer.clear()


class _ExactReader:
    """Reads exactly ``size`` bytes of an open file, zero-padding if it shrank meanwhile."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        parts = []
        got = 0
        while got < n:
            data = os.read(self.fd, n - got)
            if not data:
                parts.append(b"\0" * (n - got))
                got = n
                break
            parts.append(data)
            got += len(data)
        self.left -= got
        return b"".join(parts)


def _tarinfo(rel: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode) & 0o777
    info.mtime = int(st.st_mtime)
    # Host uids mean nothing elsewhere; a restore gives everything to the namespace's uid.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(root: Path, out: _GzipQueueWriter) -> None:
    """Write the tree under ``root`` as a tar to ``out`` (never following symlinks)."""
    # copybufsize (a TarFile argument the stubs do not know) moves file data in 1 MiB reads.
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=out, mode="w|", bufsize=CHUNK, copybufsize=CHUNK, format=tarfile.PAX_FORMAT
    ) as tar:
        if root.is_dir():
            root_fd = os.open(root, _DIR_FLAGS)
            try:
                _add_dir(tar, root_fd, "", {})
            finally:
                os.close(root_fd)
    out.finish()


def _add_dir(tar: tarfile.TarFile, dir_fd: int, prefix: str, inodes: dict[tuple[int, int], str]) -> None:
    with os.scandir(dir_fd) as it:
        names = sorted(entry.name for entry in it)
    for name in names:
        rel = prefix + name
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        info = _tarinfo(rel, st)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                _add_dir(tar, child, rel + "/", inodes)
            finally:
                os.close(child)
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=dir_fd)
            tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            _add_file(tar, dir_fd, name, info, st, inodes)
        # Sockets, fifos and devices are not data; they are left out.


def _add_file(
    tar: tarfile.TarFile,
    dir_fd: int,
    name: str,
    info: tarfile.TarInfo,
    st: os.stat_result,
    inodes: dict[tuple[int, int], str],
) -> None:
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in inodes:
        info.type = tarfile.LNKTYPE
        info.linkname = inodes[key]
        tar.addfile(info)
        return
    try:
        # O_NONBLOCK: if the agent swapped a FIFO in since the lstat, opening must not wait
        # for a writer that never comes (it is then skipped below, like any non-file).
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            return
        info.size = opened.st_size
        tar.addfile(info, _ExactReader(fd, info.size))
    finally:
        os.close(fd)
    if st.st_nlink > 1:
        inodes[key] = info.name


async def export_tar(root: Path) -> AsyncIterator[bytes]:
    """The gzip tar of ``root``, produced in a thread, at most a few MiB in flight."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(QUEUE_DEPTH)
    cancelled = threading.Event()

    def put(item: bytes | BaseException | None) -> None:
        future = asyncio.run_coroutine_threadsafe(chunks.put(item), loop)
        while True:
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                if cancelled.is_set():
                    future.cancel()
                    raise _Cancelled() from None

    def produce() -> None:
        try:
            write_tar(root, _GzipQueueWriter(put))
            put(None)
        except _Cancelled:
            return
        except BaseException as exc:
            with contextlib.suppress(_Cancelled, RuntimeError):
                put(exc)

    worker = loop.run_in_executor(None, produce)
    try:
        while True:
            item = await chunks.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise _export_error(item)
            yield item
        await worker
    finally:
        cancelled.set()


def _export_error(exc: BaseException) -> TroveError:
    if isinstance(exc, TroveError):
        return exc
    if isinstance(exc, OSError):
        return TroveError(f"Cannot read the namespace for a snapshot: {exc.strerror or exc}")
    return TroveError(f"Cannot write the snapshot tarball: {exc}")


# -- import -------------------------------------------------------------------------------


async def import_tar(
    staging: Path,
    target: Path,
    uid: int | None,
    chunks: AsyncIterator[bytes],
    *,
    check_space: Callable[[int], None] = lambda _: None,
    busy: set[str] | None = None,
) -> int:
    """Extract the streamed gzip tar beside ``target`` and swap it in; the regular files restored.

    ``staging`` must be on ``target``'s filesystem (the swap is a rename); ``check_space`` is
    asked before each chunk written and raises to stop the restore (the data dir's reserve);
    ``busy`` (the runtime's) holds the staging names in use while this runs, so a sweep skips them.
    """
    reader = ThreadFedReader(QUEUE_DEPTH)
    new_root = staging / f"restore-{secrets.token_hex(8)}"
    names = {new_root.name, new_root.name + "-old"}
    if busy is not None:
        busy.update(names)
    await asyncio.to_thread(new_root.mkdir, 0o700)
    worker = asyncio.get_running_loop().run_in_executor(None, extract, reader, new_root, uid, check_space)
    # An extractor that stopped early must not leave the feeder waiting for queue space.
    worker.add_done_callback(lambda _: reader.worker_stopped())
    try:
        async for chunk in chunks:
            if worker.done():
                # The archive ended (or failed); keep draining so the caller's stream completes
                # (its checksum check runs at the end) but stop feeding the extractor.
                if worker.exception() is not None:
                    break
                continue
            await reader.put(chunk)
        reader.end()
        count = await worker
        await asyncio.to_thread(_swap_in, new_root, target, uid)
        return count
    except BaseException as exc:
        reader.abort(exc)
        with contextlib.suppress(BaseException):
            await worker
        raise
    finally:
        await asyncio.to_thread(shutil.rmtree, new_root, True)
        if busy is not None:
            busy.difference_update(names)


def extract(
    reader: ThreadFedReader,
    root: Path,
    uid: int | None,
    check_space: Callable[[int], None] = lambda _: None,
) -> int:
    """Extract a gzip tar from ``reader`` into the empty directory ``root``; regular files created."""
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        return _extract(reader, root_fd, uid, check_space)
    except Aborted:
        raise
    except UnsafeMemberError as exc:
        raise SnapshotCorruptError(f"Snapshot refused: unsafe member {exc}") from exc
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        raise SnapshotCorruptError(f"Snapshot refused: not a valid gzip tar ({exc})") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError("No space left while restoring the snapshot") from exc
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            raise SnapshotCorruptError(f"Snapshot refused: conflicting member ({exc})") from exc
        raise TroveError(f"Restore failed: {exc.strerror or exc}") from exc
    finally:
        os.close(root_fd)


def _extract(
    reader: ThreadFedReader, root_fd: int, uid: int | None, check_space: Callable[[int], None]
) -> int:
    checker = MemberChecker()
    dirs: list[MemberPlan] = []
    count = 0
    with tarfile.open(fileobj=reader, mode="r|gz", bufsize=CHUNK) as tar:  # type: ignore[call-overload]
        for member in tar:
            plan = checker.check(member)
            if plan is None:
                continue
            head, _, name = plan.rel.rpartition("/")
            parent_fd = _open_dirs(root_fd, head, uid)
            try:
                if plan.kind == "dir":
                    _make_dir(parent_fd, name, uid)
                    dirs.append(plan)
                    continue
                _clear_name(parent_fd, name)
                if plan.kind == "file":
                    source = tar.extractfile(member)
                    assert source is not None
                    _write_file(parent_fd, name, source, plan, uid, check_space)
                    count += 1
                elif plan.kind == "symlink":
                    os.symlink(plan.link_target, name, dir_fd=parent_fd)
                    if uid is not None:
                        os.chown(name, uid, uid, dir_fd=parent_fd, follow_symlinks=False)
                else:
                    _link(root_fd, plan.link_target, parent_fd, name)
                    count += 1
            finally:
                os.close(parent_fd)
    # Directory modes last (deepest first), so a read-only directory did not block its children.
    for plan in sorted(dirs, key=lambda p: p.rel.count("/"), reverse=True):
        fd = os.open(plan.rel, _DIR_FLAGS, dir_fd=root_fd)
        try:
            os.fchmod(fd, plan.mode | 0o700)
            os.utime(fd, (plan.mtime, plan.mtime))
        finally:
            os.close(fd)
    # Every directory's entries (files, links, subdirectories), like each file's data, must be
    # on disk before the swap makes the tree the namespace: an acknowledged restore is durable.
    for _path, _dirs, _files, dir_fd in os.fwalk(dir_fd=root_fd):
        os.fsync(dir_fd)
    return count


def _open_dirs(root_fd: int, rel: str, uid: int | None) -> int:
    """A directory fd for ``rel`` under the new root, creating missing directories, never following links."""
    fd = os.dup(root_fd)
    for part in [p for p in rel.split("/") if p]:
        try:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            _make_dir(fd, part, uid)
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        fd = next_fd
    return fd


def _make_dir(parent_fd: int, name: str, uid: int | None) -> None:
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        if not stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
            raise
        return
    if uid is not None:
        os.chown(name, uid, uid, dir_fd=parent_fd, follow_symlinks=False)


def _clear_name(parent_fd: int, name: str) -> None:
    # A later member of the same name replaces an earlier file or link (never a directory:
    # the checker refuses that); unlink removes the name itself, never a link's target.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=parent_fd)


def _write_file(
    parent_fd: int,
    name: str,
    source: tarfile.ExFileObject,
    plan: MemberPlan,
    uid: int | None,
    check_space: Callable[[int], None],
) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=parent_fd)
    try:
        if uid is not None:
            os.fchown(fd, uid, uid)
        while data := source.read(CHUNK):
            check_space(len(data))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        os.fchmod(fd, plan.mode)
        os.utime(fd, (plan.mtime, plan.mtime))
        os.fsync(fd)
    finally:
        os.close(fd)


def _link(root_fd: int, target_rel: str, parent_fd: int, name: str) -> None:
    head, _, target_name = target_rel.rpartition("/")
    source_fd = _open_dirs(root_fd, head, None) if head else os.dup(root_fd)
    try:
        os.link(target_name, name, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
    finally:
        os.close(source_fd)


# -- swap ---------------------------------------------------------------------------------


def _swap_in(new_root: Path, target: Path, uid: int | None) -> None:
    """Make ``new_root`` the namespace directory; the old tree ends up at ``new_root``."""
    if uid is not None:
        os.chown(new_root, uid, uid)
    os.chmod(new_root, 0o700)
    if not target.exists():
        target.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.rename(new_root, target)
    elif not _exchange(new_root, target):
        # No renameat2 (old kernel or libc): two renames, with the lock held by the caller.
        aside = new_root.with_name(new_root.name + "-old")
        os.rename(target, aside)
        try:
            os.rename(new_root, target)
        except OSError:
            os.rename(aside, target)
            raise
        os.rename(aside, new_root)
    # The renames live in the two parent directories: on disk before the restore is answered.
    fsync_dir(target.parent)
    fsync_dir(new_root.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), str(b))
