"""The SnapshotStore interface: where snapshot tarballs live, streamed in and out by key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

# Chunk size for reads; writes take whatever the producer yields.
READ_CHUNK = 1024 * 1024


class SnapshotReader(Protocol):
    """An opened stored tarball; opening already checked it exists (so errors come before streaming)."""

    size: int

    def chunks(self) -> AsyncIterator[bytes]:
        """The tarball's bytes; raises ``SnapshotStoreUnavailableError`` if the store fails midway."""
        ...

    async def aclose(self) -> None: ...


class SnapshotStore(Protocol):
    """Stores raise ``trove_core.errors`` types only (``SnapshotStoreUnavailableError``, …)."""

    kind: str

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Store the streamed bytes under ``key``, all or nothing; return the size.

        If ``chunks`` raises, nothing is left behind under ``key`` and the error propagates.
        """
        ...

    async def open(self, key: str) -> SnapshotReader:
        """Open ``key`` for reading (``SnapshotNotFoundError`` when it is missing)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        ...

    async def sweep(self, stale_s: float) -> int:
        """Remove what killed uploads left (temp files, incomplete multipart uploads) older
        than ``stale_s`` seconds; returns how many. Never touches an upload in progress."""
        ...

    async def check(self) -> None:
        """Raise ``SnapshotStoreUnavailableError`` unless the store is usable (readiness)."""
        ...

    async def aclose(self) -> None: ...
