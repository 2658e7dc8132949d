"""File operations without trove-agent: one fresh pod exec of ``fallback.script`` per operation.

The runtime switches to this when the sandbox image has no agent (or no python3). Only POSIX
tools run in the pod. A fresh exec cannot half-close stdin, so every byte stream sent to the
pod carries its length (``<n>\\n`` then n bytes, ``end\\n`` last), and byte ranges coming back
are announced the same way. Paths are checked and errors coded as the agent does (the codes
go through ``channel.agent_error``), so callers see the same answers, only slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

import aiohttp

from trove_api.runtimes.channel.protocol import FRAME_BYTES, agent_error
from trove_api.runtimes.kubernetes.fallback.script import SCRIPT
from trove_api.runtimes.kubernetes.kubeapi import KubeApi
from trove_api.runtimes.kubernetes.podexec import STATUS, STDERR, STDOUT, _exit_code
from trove_core.errors import PayloadTooLargeError, TroveError, UnavailableError
from trove_core.paths import display
from trove_core.runtime import FileStat

log = logging.getLogger(__name__)

ROOT = "/workspace"
TEMP_PREFIX = ".trove-upload-"
START_TIMEOUT_S = 30.0
ABORT_TIMEOUT_S = 5.0
# Stdout waiting to be consumed; past this the reader stops, and TCP pushes back on the pod.
QUEUE_BYTES = 2 * FRAME_BYTES
STDERR_KEEP = 64 * 1024

# A directory's entries: (name, is_dir, size, mtime_ns), directories and files apart, sorted.
Entry = tuple[str, bool, int, int]
Listing = tuple[list[Entry], list[Entry]]


class Shell:
    """One running fallback script: bytes in, stdout as a stream, then an exit status.

    A transport (a pod exec websocket; a local process in tests) calls ``stdout``, ``stderr_data``
    and ``ended``, and implements ``send`` and ``close``.
    """

    def __init__(self) -> None:
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._room = asyncio.Event()
        self._buffer = bytearray()
        self._eof = False
        self.stderr = bytearray()
        self.exit_code: int | None = None
        self.lost = False

    # -- transport side -------------------------------------------------------------------

    async def stdout(self, data: bytes) -> None:
        self._chunks.put_nowait(data)
        self._queued += len(data)
        while self._queued > QUEUE_BYTES:
            self._room.clear()
            await self._room.wait()

    def stderr_data(self, data: bytes) -> None:
        self.stderr += data
        del self.stderr[:-STDERR_KEEP]

    def ended(self, exit_code: int, *, lost: bool = False) -> None:
        self.exit_code = exit_code
        self.lost = lost
        self._chunks.put_nowait(None)

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    # -- consumer side --------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    async def _next(self) -> bytes | None:
        if self._eof:
            return None
        chunk = await self._chunks.get()
        if chunk is None:
            self._eof = True
            return None
        self._queued -= len(chunk)
        if self._queued <= QUEUE_BYTES:
            self._room.set()
        return chunk

    async def line(self) -> bytes | None:
        """The next stdout line without its newline; None if the script ended first."""
        while (end := self._buffer.find(b"\n")) < 0:
            chunk = await self._next()
            if chunk is None:
                return None
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    async def exactly(self, size: int) -> AsyncIterator[bytes]:
        """The next ``size`` bytes of stdout, as they arrive."""
        left = size
        while left > 0:
            if self._buffer:
                chunk = bytes(self._buffer)
                self._buffer.clear()
            else:
                next_chunk = await self._next()
                if next_chunk is None:
                    raise UnavailableError("The sandbox stopped sending a file; retry", retry_after=1)
                chunk = next_chunk
            if len(chunk) > left:
                self._buffer += chunk[left:]
                chunk = chunk[:left]
            left -= len(chunk)
            yield chunk

    async def chunks(self) -> AsyncIterator[bytes]:
        """The rest of stdout, as it arrives, until the script ends."""
        if self._buffer:
            yield bytes(self._buffer)
            self._buffer.clear()
        while (chunk := await self._next()) is not None:
            yield chunk

    async def rest(self) -> bytes:
        """All remaining stdout (small answers only)."""
        return b"".join([chunk async for chunk in self.chunks()])

    async def send_frame(self, data: bytes | bytearray) -> None:
        """One length-prefixed piece of a byte stream (see the module's docstring)."""
        await self.send(b"%d\n" % len(data) + data)

    async def abort(self) -> None:
        """Stop a script reading frames (it removes what it made) and wait for it, briefly."""
        with contextlib.suppress(TroveError, TimeoutError):
            await self.send(b"abort\n")
            async with asyncio.timeout(ABORT_TIMEOUT_S):
                await self.finish()

    async def finish(self) -> int:
        """Wait for the script to end (discarding stdout) and return its exit status."""
        self._buffer.clear()
        while await self._next() is not None:
            pass
        assert self.exit_code is not None
        return self.exit_code

    def error(self, rel: str) -> TroveError:
        """The error the script reported, as the agent path would raise it."""
        text = self.stderr.decode(errors="replace")
        for line in reversed(text.splitlines()):
            if line.startswith("trove:"):
                code, _, message = line.removeprefix("trove:").partition(":")
                return agent_error({"code": code, "rel": rel, "message": message})
        if self.lost:
            return UnavailableError("The exec stream to the sandbox pod dropped; retry", retry_after=1)
        return TroveError(
            f"Sandbox error on {display(rel)}: the file script exited {self.exit_code}: {text.strip()[-500:]}"
        )


class PodShell(Shell):
    """The fallback script in a fresh exec stream (websocket channels: 0 stdin, 1/2 out/err, 3 status)."""

    def __init__(self, pod: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__()
        self.pod = pod
        self.ws = ws
        self._reader = asyncio.create_task(self._read(), name=f"trove-files-{pod}")

    @classmethod
    async def start(cls, api: KubeApi, pod: str, argv: Sequence[str]) -> PodShell:
        return cls(pod, await api.exec_ws(pod, argv))

    async def _read(self) -> None:
        status: dict[str, Any] | None = None
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                    continue
                data: bytes = message.data
                if data[0] == STDOUT:
                    await self.stdout(data[1:])
                elif data[0] == STDERR:
                    self.stderr_data(data[1:])
                elif data[0] == STATUS:
                    with contextlib.suppress(ValueError):
                        status = json.loads(data[1:])
        except Exception:  # whoever waits must learn that the stream ended
            log.exception("file fallback stream to %s failed", self.pod)
        finally:
            self.ended(_exit_code(status or {}), lost=status is None)

    async def send(self, data: bytes) -> None:
        try:
            await self.ws.send_bytes(b"\x00" + data)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise UnavailableError(
                "The exec stream to the sandbox pod dropped; retry",
                retry_after=1,
                internal=f"the exec stream to {self.pod} dropped",
            ) from exc

    async def close(self) -> None:
        # Closing the stream ends the script: its stdin reaches EOF, its stdout breaks.
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        with contextlib.suppress(Exception):
            await self.ws.close()


Spawn = Callable[[Sequence[str]], Awaitable[Shell]]


class PodFiles:
    """write / open_file / list / delete, with the agent session's signatures, over fresh execs."""

    def __init__(self, spawn: Spawn, root: str = ROOT) -> None:
        self._spawn = spawn
        self.root = root

    @classmethod
    def in_pod(cls, api: KubeApi, pod: str) -> PodFiles:
        async def spawn(argv: Sequence[str]) -> Shell:
            return await PodShell.start(api, pod, argv)

        return cls(spawn)

    async def run(self, op: str, *args: str) -> Shell:
        """Start the script's ``op`` (``fallback.snapshots`` runs its two as well)."""
        return await self._spawn(["/bin/sh", "-c", SCRIPT, "trove-files", op, self.root, *args])

    async def write(self, rel: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        shell = await self.run("write", rel, f"{TEMP_PREFIX}{secrets.token_hex(8)}", str(max_bytes))
        ended = False
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                ready = await shell.line()
            if ready != b"ready":
                ended = True
                await shell.finish()
                raise shell.error(rel)
            size = 0
            pending = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLargeError(
                        f"{display(rel)} is larger than the limit of {max_bytes} bytes"
                    )
                if shell.done:  # it failed meanwhile (e.g. storage full): its error is the answer
                    break
                pending += chunk
                if len(pending) >= FRAME_BYTES:
                    await shell.send_frame(pending)
                    pending.clear()
            else:
                if pending:
                    await shell.send_frame(pending)
                await shell.send(b"end\n")
            ended = True
            # Exit 0 only after "end": a script that stopped early always fails.
            if await shell.finish() != 0:
                raise shell.error(rel)
            return size
        finally:
            if not ended:
                # The script deletes its temp file on "abort"; wait so none is left behind.
                await shell.abort()
            await shell.close()

    async def open_file(self, rel: str) -> PodFile:
        shell = await self.run("open", rel)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                line = await shell.line()
            if line is None or not line.startswith(b"ok "):
                await shell.finish()
                raise shell.error(rel)
            _, size, mtime = line.split(b" ")
            stat = FileStat(rel=rel, is_dir=False, size=int(size), mtime_ns=_mtime_ns(mtime))
        except BaseException:
            await shell.close()
            raise
        return PodFile(shell, rel, stat)

    async def list(
        self, rel: str, *, recursive: bool, max_entries: int, max_depth: int
    ) -> tuple[list[FileStat], bool]:
        # Level by level, one exec each, listing only directories that can still be in the answer.
        tree: dict[str, Listing] = {}
        wanted = ["."]
        while True:
            tree.update(await self._list_dirs(rel, wanted))
            entries, truncated, wanted = walk(
                tree, rel, recursive=recursive, max_entries=max_entries, max_depth=max_depth
            )
            if not wanted:
                return entries, truncated

    async def _list_dirs(self, rel: str, keys: Sequence[str]) -> dict[str, Listing]:
        names = b"".join(key.encode("utf-8", "surrogateescape") + b"\0" for key in keys)
        shell = await self.run("list", rel, str(len(names)))
        try:
            # A script that already refused the path reads nothing: its answer is what counts.
            with contextlib.suppress(UnavailableError):
                for start in range(0, len(names), FRAME_BYTES):
                    await shell.send(names[start : start + FRAME_BYTES])
            out = await shell.rest()
            if await shell.finish() != 0:
                raise shell.error(rel)
        finally:
            await shell.close()
        found: dict[str, tuple[list[Entry], list[Entry]]] = {key: ([], []) for key in keys}
        fields = out.split(b"\0")
        for i in range(0, len(fields) - 4, 5):
            parent, kind, size, mtime, raw = fields[i : i + 5]
            dirs, files = found.setdefault(parent.decode("utf-8", "surrogateescape"), ([], []))
            name = raw.decode("utf-8", "surrogateescape")
            if kind == b"d":
                dirs.append((name, True, 0, _mtime_ns(mtime)))
            else:
                files.append((name, False, int(size), _mtime_ns(mtime)))
        for dirs, files in found.values():
            dirs.sort()
            files.sort()
        return found

    async def delete(self, rel: str) -> None:
        shell = await self.run("delete", rel)
        try:
            if await shell.finish() != 0:
                raise shell.error(rel)
        finally:
            await shell.close()


class PodFile:
    """A file the script holds open on fd 3 (as the agent holds a handle); ranges read on request."""

    def __init__(self, shell: Shell, rel: str, stat: FileStat) -> None:
        self.shell = shell
        self.rel = rel
        self.stat = stat
        self._busy = False

    async def iter_bytes(self, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        if self._busy:
            raise TroveError("A range of this file is still being read")
        # Stays set if the consumer stops early: the stream is then mid-range and unusable.
        self._busy = True
        await self.shell.send(f"{start} {end - start}\n".encode())
        line = await self.shell.line()
        if line is None or not line.isdigit():
            if line is None:
                await self.shell.finish()
            raise self.shell.error(self.rel)
        size = int(line)
        async for chunk in self.shell.exactly(size):
            yield chunk
        self._busy = False
        if start + size < min(end, self.stat.size):  # less than it had when opened
            raise TroveError(f"{display(self.rel)} became shorter while it was read")

    async def aclose(self) -> None:
        await self.shell.close()


def walk(
    tree: dict[str, Listing], rel: str, *, recursive: bool, max_entries: int, max_depth: int
) -> tuple[list[FileStat], bool, list[str]]:
    """The agent's listing order and limits over the directories listed so far.

    Returns ``(entries, truncated, unlisted)``: directories the answer reaches but ``tree``
    does not hold yet. Listing them can only push later entries further down, so once none is
    left the answer is final.
    """
    entries: list[FileStat] = []
    truncated = False
    unlisted: list[str] = []

    def visit(key: str, prefix: str, depth: int) -> None:
        nonlocal truncated
        dirs, files = tree[key]
        for name, _is_dir, _size, mtime_ns in dirs:
            if len(entries) >= max_entries:
                truncated = True
                return
            entries.append(FileStat(rel=prefix + name, is_dir=True, size=0, mtime_ns=mtime_ns))
            if recursive:
                if depth >= max_depth:
                    truncated = True
                    continue
                child = f"{key}/{name}"
                if child not in tree:
                    unlisted.append(child)
                    continue
                visit(child, f"{prefix}{name}/", depth + 1)
                if truncated and len(entries) >= max_entries:
                    return
        for name, _is_dir, size, mtime_ns in files:
            if len(entries) >= max_entries:
                truncated = True
                return
            entries.append(FileStat(rel=prefix + name, is_dir=False, size=size, mtime_ns=mtime_ns))

    # Entries carry the caller's spelling of the path, not a symlink's target.
    visit(".", f"{rel}/" if rel else "", 1)
    return entries, truncated, unlisted


def _mtime_ns(text: bytes) -> int:
    """``find -printf %T@`` (``1700000000.1234567890``) or ``stat %Y`` seconds, in nanoseconds."""
    try:
        return int(Decimal(text.decode()).scaleb(9).to_integral_value(rounding=ROUND_FLOOR))
    except (InvalidOperation, ValueError):
        return 0
