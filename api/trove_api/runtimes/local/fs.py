"""Symlink-safe file operations inside one namespace directory on the host.

The server may run as root, and the agent controls every name under its namespace, including
symlinks it made with ``ln -s``. So each operation first resolves the path (``realpath``) and
refuses any that lands outside the namespace, then walks the *resolved* path one component at
a time with ``O_NOFOLLOW`` relative to directory file descriptors. A symlink swapped in between
the check and the walk makes the walk fail instead of being followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from trove_core.errors import (
    IsADirectoryError_,
    NotADirectoryError_,
    PathNotFoundError,
    PathRejectedError,
    StorageFullError,
    TroveError,
)
from trove_core.paths import display
from trove_core.runtime import FileStat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Owner:
    """Who new files and directories belong to (None: the server's own uid)."""

    uid: int | None

    def apply(self, fd: int) -> None:
        if self.uid is not None:
            os.fchown(fd, self.uid, self.uid)


def resolve(root: Path, rel: str, *, follow_last: bool = True) -> str:
    """The real namespace-relative path of ``rel``, or ``PathRejectedError`` if it leaves ``root``."""
    if not rel:
        return ""
    root_real = os.path.realpath(root)
    if follow_last:
        real = os.path.realpath(os.path.join(root_real, rel))
    else:
        # The last name as it is: a symlink there is the link itself (deleting it never touches
        # its target, wherever that is), so only the directories above it must stay inside.
        head, _, last = rel.rpartition("/")
        real = os.path.join(os.path.realpath(os.path.join(root_real, head)), last)
    if not _inside(real, root_real):
        raise PathRejectedError(f"Path rejected: {display(rel)} resolves outside the namespace")
    return "" if real == root_real else os.path.relpath(real, root_real)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def open_root(root: Path) -> int:
    return os.open(root, _DIR_FLAGS)


def open_dir(root_fd: int, rel: str, *, create: bool = False, owner: Owner | None = None) -> int:
    """A directory fd for ``rel`` (already resolved), walking with O_NOFOLLOW."""
    fd = os.dup(root_fd)
    try:
        for part in [p for p in rel.split("/") if p]:
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                    # A new directory's entry must be durable before a file renamed into it is.
                    os.fsync(fd)
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if owner is not None:
                    owner.apply(next_fd)
            os.close(fd)
            fd = next_fd
        return fd
    except OSError as exc:
        os.close(fd)
        raise translate(exc, rel) from exc


def translate(exc: OSError, rel: str) -> TroveError:
    """Map an OSError from a walk or an operation to the error the client sees."""
    if isinstance(exc, TroveError):
        return exc
    where = display(rel)
    if exc.errno == errno.ENOENT:
        return PathNotFoundError(f"Path not found: {where}")
    if exc.errno == errno.ENOTDIR:
        return NotADirectoryError_(f"Not a directory: {where}")
    if exc.errno == errno.EISDIR:
        return IsADirectoryError_(f"Is a directory: {where}")
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return PathRejectedError(f"Path rejected: {where} goes through a symlink")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(f"No space left while writing {where}")
    if exc.errno == errno.ENAMETOOLONG:
        return PathRejectedError(f"Path rejected: name too long ({where})")
    return TroveError(f"Filesystem error on {where}: {exc.strerror}")


def stat_to_file(rel: str, st: os.stat_result) -> FileStat:
    is_dir = stat.S_ISDIR(st.st_mode)
    return FileStat(rel=rel, is_dir=is_dir, size=0 if is_dir else st.st_size, mtime_ns=st.st_mtime_ns)


def split(rel: str) -> tuple[str, str]:
    head, _, last = rel.rpartition("/")
    return head, last


def list_entries(
    root_fd: int, rel: str, *, recursive: bool, max_entries: int, max_depth: int
) -> tuple[list[FileStat], bool]:
    dir_fd = open_dir(root_fd, rel)
    entries: list[FileStat] = []
    truncated = False

    def walk(fd: int, prefix: str, depth: int) -> None:
        nonlocal truncated
        dirs: list[tuple[str, os.stat_result]] = []
        files: list[tuple[str, os.stat_result]] = []
        with os.scandir(fd) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                (dirs if stat.S_ISDIR(st.st_mode) else files).append((entry.name, st))
        dirs.sort()
        files.sort()
        for name, st in dirs:
            if len(entries) >= max_entries:
                truncated = True
                return
            child = f"{prefix}{name}"
            entries.append(stat_to_file(child, st))
            if recursive:
                if depth >= max_depth:
                    truncated = True
                    continue
                try:
                    child_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    walk(child_fd, child + "/", depth + 1)
                finally:
                    os.close(child_fd)
                if truncated and len(entries) >= max_entries:
                    return
        for name, st in files:
            if len(entries) >= max_entries:
                truncated = True
                return
            entries.append(stat_to_file(f"{prefix}{name}", st))

    try:
        walk(dir_fd, f"{rel}/" if rel else "", 1)
    finally:
        os.close(dir_fd)
    return entries, truncated


def remove(root_fd: int, rel: str) -> None:
    head, last = split(rel)
    parent_fd = open_dir(root_fd, head)
    try:
        st = os.stat(last, dir_fd=parent_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(last, dir_fd=parent_fd)
        else:
            os.unlink(last, dir_fd=parent_fd)
    except OSError as exc:
        raise translate(exc, rel) from exc
    finally:
        os.close(parent_fd)
