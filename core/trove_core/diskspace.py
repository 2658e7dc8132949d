"""The data dir's reserve: changes stop while the database still has room to commit.

A full data disk must never leave a change done but its event unwritten (SQLite answers
"database or disk is full" as soon as its WAL cannot grow). So every change the API makes on
the data dir's filesystem (file writes, restores, directory-store snapshots, new namespaces)
first asks ``DiskReserve.check``: below ``reserve_bytes`` of free space it is refused with 507
``storage_full`` and the remaining room stays for the database's commits.

Free space is ``f_bavail``, what an unprivileged process may still use, so a filesystem's
root-reserved blocks (ext4 keeps 5% by default) only add to the margin.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from trove_core.errors import StorageFullError

MIB = 1024 * 1024
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskReserve:
    def __init__(self, path: Path, reserve_bytes: int) -> None:
        self.path = path
        self.reserve_bytes = reserve_bytes

    @classmethod
    def off(cls) -> DiskReserve:
        return cls(Path("/"), 0)

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def covers(self, path: Path) -> bool:
        """Whether writes under ``path`` use the reserved filesystem (it exists)."""
        return self.reserve_bytes > 0 and os.stat(path).st_dev == os.stat(self.path).st_dev

    def check(self, incoming: int = 0) -> None:
        """Refuse (507) if writing ``incoming`` more bytes would eat into the reserve."""
        if self.reserve_bytes <= 0:
            return
        free = self.free_bytes()
        if free - incoming < self.reserve_bytes:
            raise StorageFullError(
                f"The server's disk is nearly full ({free // MIB} MiB free; "
                f"{self.reserve_bytes // MIB} MiB are kept for the database): "
                "free space (delete files or snapshots) and retry"
            )
