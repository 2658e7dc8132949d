"""DirectorySnapshotStore: tarballs as files under a directory (the embedded default)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from trove_api.stores.snapshots.base import READ_CHUNK
from trove_core.diskspace import DiskReserve
from trove_core.errors import SnapshotNotFoundError, SnapshotStoreUnavailableError, StorageFullError

# A temp file untouched this long belongs to no running upload (each chunk written touches it).
STALE_TEMP_S = 3600


@dataclass
class _FileReader:
    fd: int
    size: int

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            data = await asyncio.to_thread(os.read, self.fd, READ_CHUNK)
            if not data:
                return
            yield data

    async def aclose(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class DirectorySnapshotStore:
    kind = "directory"

    def __init__(self, root: Path, reserve: DiskReserve | None = None) -> None:
        self.root = root
        # Temp files sit in the same directory tree, so the final rename is atomic.
        self.temp = root / ".tmp"
        self.temp.mkdir(parents=True, exist_ok=True)
        # On the database's filesystem, a snapshot stops at the data dir's reserve (507).
        self.reserve = reserve if reserve is not None and reserve.covers(root) else DiskReserve.off()
        os.chmod(root, 0o700)
        # This process's uploads in progress: never swept, however slow.
        self._writing: set[str] = set()
        self._sweep(STALE_TEMP_S)

    async def sweep(self, stale_s: float) -> int:
        """Remove temp files a killed upload left, untouched for ``stale_s``; returns how many."""
        return await asyncio.to_thread(self._sweep, stale_s)

    def _sweep(self, stale_s: float) -> int:
        # Only what a crash left behind: another process on this directory (a second replica,
        # a `trove-server snapshots` command) may be writing a snapshot right now, and each
        # chunk it writes touches its temp file.
        cutoff = time.time() - stale_s
        removed = 0
        for leftover in self.temp.iterdir():
            if leftover.name in self._writing:
                continue
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
        return removed

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"bad snapshot key {key!r}")
        return self.root.joinpath(*parts)

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        final = self._path(key)
        temp = self.temp / f"{secrets.token_hex(8)}.part"
        self._writing.add(temp.name)
        fd = await asyncio.to_thread(
            os.open, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        size = 0
        done = False
        try:
            async for chunk in chunks:
                self.reserve.check(len(chunk))
                await asyncio.to_thread(_write_all, fd, chunk)
                size += len(chunk)
            await asyncio.to_thread(_commit, fd, temp, final)
            done = True
            return size
        except OSError as exc:
            raise _translate(exc) from exc
        finally:
            self._writing.discard(temp.name)
            with contextlib.suppress(OSError):
                os.close(fd)
            if not done:
                temp.unlink(missing_ok=True)

    async def open(self, key: str) -> _FileReader:
        try:
            fd = await asyncio.to_thread(os.open, self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise SnapshotNotFoundError(f"Snapshot data {key} is missing from the store") from exc
        except OSError as exc:
            raise _translate(exc) from exc
        return _FileReader(fd=fd, size=os.fstat(fd).st_size)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise SnapshotStoreUnavailableError(
                "The snapshot directory is not writable",
                internal=f"Snapshot directory {self.root} is not writable",
            )

    async def aclose(self) -> None:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _commit(fd: int, temp: Path, final: Path) -> None:
    os.fsync(fd)
    _make_dirs(final.parent)
    os.rename(temp, final)
    _fsync_dir(final.parent)


def _make_dirs(path: Path) -> None:
    """``mkdir -p``, each new directory's entry fsynced in its parent (durable like the file)."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _translate(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError("No space left in the snapshot directory")
    return SnapshotStoreUnavailableError(
        f"Snapshot directory error: {exc.strerror or 'I/O error'}",
        internal=f"Snapshot directory error: {exc}",
    )
