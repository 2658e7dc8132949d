"""The Runtime protocol: the narrow seam between the API and a backend that moves bytes and processes.

Everything above it (auth, limits, path rules, events, snapshot bookkeeping) is written once.
A runtime receives only validated namespace-relative paths (``trove_core.paths.normalize``) and
must itself refuse to follow symlinks that leave the namespace. It raises ``trove_core.errors``
types, never its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from trove_core import crd


@dataclass(frozen=True)
class NamespaceRef:
    """One agent namespace: a name inside a workspace. ``uid`` is the host uid it runs as, if any."""

    workspace_id: str
    name: str
    uid: int | None = None

    @cached_property
    def object_name(self) -> str:
        """Its TroveNamespace's name (Kubernetes): hashed once per reference, not at every use."""
        return crd.object_name(self.workspace_id, self.name)


@dataclass(frozen=True)
class ExecSpec:
    """A bash script to run in a fresh shell whose cwd contains ``workspace/``."""

    script: str
    stdin: bytes | None
    timeout_s: float
    output_limit: int


@dataclass(frozen=True)
class ExecOutput:
    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    duration_ms: int


@dataclass(frozen=True)
class FileStat:
    rel: str
    is_dir: bool
    size: int
    mtime_ns: int


class FileReader(Protocol):
    """An open file: its stat at open time and a byte stream over a range of it."""

    stat: FileStat

    def iter_bytes(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield bytes [start, end) of the file."""
        ...

    async def aclose(self) -> None: ...


class Runtime(Protocol):
    async def provision(self, ns: NamespaceRef) -> None:
        """Create the namespace's storage (idempotent)."""
        ...

    async def exec(self, ns: NamespaceRef, spec: ExecSpec) -> ExecOutput:
        """Run ``spec`` in a fresh sandboxed shell; nothing it starts outlives the call."""
        ...

    async def write(self, ns: NamespaceRef, rel: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        """Atomically replace ``rel`` with the streamed bytes (creating parents); return the size.

        Raises ``PayloadTooLargeError`` past ``max_bytes``; on any failure no partial file remains.
        """
        ...

    async def open_file(self, ns: NamespaceRef, rel: str) -> FileReader:
        """Open a regular file for reading (``PathNotFoundError``, ``IsADirectoryError_``)."""
        ...

    async def list_dir(
        self, ns: NamespaceRef, rel: str, *, recursive: bool, max_entries: int, max_depth: int
    ) -> tuple[list[FileStat], bool]:
        """Entries under ``rel`` (dirs first, then files, alphabetical; pre-order when recursive).

        Returns ``(entries, truncated)``. A namespace with no storage yet lists as empty.
        """
        ...

    async def delete(self, ns: NamespaceRef, rel: str) -> None:
        """Remove a file or a whole directory tree (``PathNotFoundError`` if missing)."""
        ...

    def export_tar(self, ns: NamespaceRef) -> AsyncIterator[bytes]:
        """Stream the namespace root as a gzip-compressed tar (never whole in memory or on disk).

        Holds regular files, directories, symlinks (as links) and hard links; other file types
        are skipped. A namespace with no storage yet exports as an empty archive.
        """
        ...

    async def import_tar(self, ns: NamespaceRef, chunks: AsyncIterator[bytes]) -> int:
        """Replace the namespace's contents with the streamed gzip tar; return regular files restored.

        All or nothing: members are checked (``trove_core.archive``) and extracted into a new
        directory that replaces the namespace only after the stream ended cleanly; any failure
        (``SnapshotCorruptError`` for a bad or unsafe tarball, errors raised by ``chunks``,
        ``StorageFullError``) leaves the namespace exactly as it was.
        """
        ...

    def path_aliases(self, ns: NamespaceRef) -> Sequence[str]:
        """Absolute paths that name the namespace root in command output (rewritten to ``workspace``)."""
        ...

    async def aclose(self) -> None: ...
