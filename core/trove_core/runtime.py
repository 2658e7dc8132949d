"""The Runtime protocol: the narrow seam between the API and a backend that moves bytes and processes.

Everything above it (auth, limits, path rules, events, snapshot bookkeeping) is written once.
A runtime receives only validated namespace-relative paths (``trove_core.paths.normalize``) and
must itself refuse to follow symlinks that leave the namespace. It raises ``trove_core.errors``
types, never its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Protocol

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


# -- processes that outlive a call (E2B's process API and the dashboard's terminal map onto these)


@dataclass(frozen=True)
class PtySize:
    rows: int
    cols: int


@dataclass(frozen=True)
class ProcessSpec:
    """A process to start in the namespace's sandbox; it runs until it exits, is signalled, or
    the sandbox stops. ``argv[0]`` is looked up on the sandbox's PATH; ``cwd`` is
    namespace-relative (``None``: the namespace root). With ``pty`` its stdin, stdout and
    stderr are one terminal of that size (output arrives as stream ``pty``); without, ``stdin``
    says whether it gets a pipe to write to (else /dev/null)."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    pty: PtySize | None = None
    tag: str | None = None
    stdin: bool = False


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    argv: tuple[str, ...]
    env: Mapping[str, str]  # as given at the start (the sandbox adds PATH, HOME, ...)
    tag: str | None
    cwd: str
    pty: PtySize | None
    stdin: bool
    running: bool
    exit_code: int | None  # 128 + N when a signal N ended it
    cursor: int  # bytes written so far: read from here to get only what comes next


@dataclass(frozen=True)
class ProcessOutput:
    """Bytes the process wrote. ``cursor`` is the offset of ``data[0]`` in all its output (one
    count across its streams); resume with ``cursor + len(data)``. ``dropped`` bytes before this
    chunk were older than the kept buffer when asked for."""

    stream: Literal["stdout", "stderr", "pty"]
    data: bytes
    cursor: int
    dropped: int = 0


@dataclass(frozen=True)
class ProcessEnd:
    """The last item of an output stream: the process has exited and all it wrote was read."""

    exit_code: int
    cursor: int  # every byte it wrote
    dropped: int = 0


@dataclass(frozen=True)
class SandboxUsage:
    """What a namespace's sandbox uses now (E2B's ``get_metrics``); 0 where not known."""

    cpu_count: int
    cpu_ns: int  # CPU time used so far: a rate needs two samples
    mem_used: int
    mem_total: int
    mem_cache: int = 0


@dataclass(frozen=True)
class SandboxSize:
    """What each sandbox of a runtime is given (E2B's ``cpuCount``/``memoryMB``): the CPUs its
    usage reports (``SandboxUsage.cpu_count``) and its memory limit. Known without waking it."""

    cpu_count: int
    memory_mb: int


class FileReader(Protocol):
    """An open file: its stat at open time and a byte stream over a range of it."""

    stat: FileStat

    def iter_bytes(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield bytes [start, end) of the file."""
        ...

    async def aclose(self) -> None: ...


class PortConnection(Protocol):
    """A TCP connection to a port inside a namespace's sandbox (``Runtime.connect_port``)."""

    async def send(self, data: bytes | bytearray | memoryview) -> None: ...

    async def receive(self) -> bytes:
        """The next bytes from the server; ``b""`` once it closed its side."""
        ...

    async def send_eof(self) -> None: ...

    async def aclose(self) -> None: ...


class Runtime(Protocol):
    async def provision(self, ns: NamespaceRef) -> None:
        """Create the namespace's storage (idempotent)."""
        ...

    async def deprovision(self, ns: NamespaceRef) -> None:
        """Remove the namespace's sandbox, processes and storage for good (idempotent)."""
        ...

    async def stop_sandbox(self, ns: NamespaceRef) -> None:
        """End the sandbox's processes and every call in flight in it now (they fail with
        ``ChannelLostError``), keeping its storage; the next call starts it again (idempotent)."""
        ...

    async def suspend(self, ns: NamespaceRef) -> None:
        """``stop_sandbox``, and give back what a stopped sandbox still holds until its next
        call wakes it (Kubernetes: the pod and its CPU and memory requests), as an idle suspend."""
        ...

    async def usage(self, ns: NamespaceRef) -> SandboxUsage:
        """CPU and memory of the namespace's sandbox (started if it is not running)."""
        ...

    def sandbox_size(self) -> SandboxSize:
        """The CPUs and memory every sandbox is given (from settings; starts nothing)."""
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

    # Processes that outlive a call. Bounded per namespace (``ProcessLimitReachedError``); gone
    # when the sandbox stops. An unknown or forgotten pid: ``ProcessNotFoundError``.

    async def start_process(self, ns: NamespaceRef, spec: ProcessSpec) -> ProcessInfo:
        """Start ``spec``; ``ProcessStartFailedError`` if it cannot be executed."""
        ...

    def process_output(
        self, ns: NamespaceRef, pid: int, cursor: int = 0, hold: bool = False
    ) -> AsyncIterator[ProcessOutput | ProcessEnd]:
        """Output kept since ``cursor``, then live output as it comes, then one ``ProcessEnd``.

        Any number of readers, each at its own pace; leaving early does not touch the process.
        A reader behind the kept buffer loses the oldest bytes, unless it ``hold``s: then the
        process waits (its writes block) until that reader catches up or leaves.
        """
        ...

    async def write_stdin(self, ns: NamespaceRef, pid: int, data: bytes) -> None:
        """``ProcessStdinClosedError`` once its input is closed (or it started without one)."""
        ...

    async def close_stdin(self, ns: NamespaceRef, pid: int) -> None:
        """End of input (on a terminal: EOT, as ^D typed)."""
        ...

    async def resize_pty(self, ns: NamespaceRef, pid: int, size: PtySize) -> None:
        """``ProcessNotAPtyError`` for a process without a terminal."""
        ...

    async def signal_process(self, ns: NamespaceRef, pid: int, signum: int) -> None:
        """Send ``signum`` to its process group; nothing for one that has ended."""
        ...

    async def wait_process(self, ns: NamespaceRef, pid: int) -> int:
        """Its exit code, once it has exited (at once for one that has)."""
        ...

    async def list_processes(self, ns: NamespaceRef) -> list[ProcessInfo]:
        """The running processes and the recently ended ones."""
        ...

    async def connect_port(self, ns: NamespaceRef, port: int) -> PortConnection:
        """Connect to ``127.0.0.1:<port>`` as seen inside the sandbox (``SandboxPortClosedError``
        when nothing accepts there). Nothing else publishes a sandbox's ports."""
        ...

    async def set_egress(self, ns: NamespaceRef, blocked: Sequence[str], *, dns: bool = True) -> None:
        """Refuse the sandbox's outbound traffic to ``blocked`` (CIDRs) on top of the runtime's
        own isolation, replacing the previous set (empty: only the runtime's own); ``dns=False``
        cuts its resolver too (a resolver forwards queries out: a channel past ``blocked``).
        Kept for the life of the runtime and re-applied when the sandbox's network is rebuilt;
        ``EgressRulesUnsupportedError`` where nothing could enforce it."""
        ...

    async def aclose(self) -> None: ...
