"""Files: caps, display paths and events around the runtime's byte moving."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from trove_api.events import types
from trove_api.services import intents as kinds
from trove_api.services.auth import Caller
from trove_api.services.events import EventEmitter
from trove_api.services.intents import Intent, IntentLog
from trove_api.services.namespace_locks import NamespaceLocks
from trove_api.services.namespaces import NamespaceService
from trove_core import paths
from trove_core.errors import (
    IsADirectoryError_,
    PathNotFoundError,
    PathRejectedError,
    PayloadTooLargeError,
    RootDeleteRefusedError,
)
from trove_core.runtime import FileReader, FileStat, Runtime
from trove_core.wire import PREVIEW_MAX_BYTES


@dataclass(frozen=True)
class Written:
    path: str
    size_bytes: int


@dataclass(frozen=True)
class Preview:
    stat: FileStat
    content: str | None
    truncated: bool


class FileService:
    def __init__(
        self,
        runtime: Runtime,
        namespaces: NamespaceService,
        emitter: EventEmitter,
        *,
        write_max_bytes: int,
        upload_max_bytes: int,
        locks: NamespaceLocks,
        intents: IntentLog,
    ) -> None:
        self.runtime = runtime
        self.namespaces = namespaces
        self.emitter = emitter
        self.intents = intents
        # Shared with execs and other writes; a snapshot restore takes it exclusively.
        self.locks = locks
        self.write_max_bytes = write_max_bytes
        self.upload_max_bytes = upload_max_bytes

    async def write_text(self, caller: Caller, namespace: str, raw_path: str, content: str) -> Written:
        data = content.encode("utf-8", "surrogatepass")
        if len(data) > self.write_max_bytes:
            raise PayloadTooLargeError(
                f"Content is {len(data)} bytes; POST /write accepts at most "
                f"{self.write_max_bytes} bytes (use PUT /files for larger or binary files)"
            )

        async def one_chunk() -> AsyncIterator[bytes]:
            yield data

        return await self._store(caller, namespace, raw_path, one_chunk(), self.write_max_bytes)

    async def upload(
        self,
        caller: Caller,
        namespace: str,
        raw_path: str,
        chunks: AsyncIterator[bytes],
        declared_length: int | None,
    ) -> Written:
        if declared_length is not None and declared_length > self.upload_max_bytes:
            raise PayloadTooLargeError(
                f"Body is {declared_length} bytes; PUT /files accepts at most {self.upload_max_bytes} bytes"
            )
        return await self._store(caller, namespace, raw_path, chunks, self.upload_max_bytes)

    async def _store(
        self,
        caller: Caller,
        namespace: str,
        raw_path: str,
        chunks: AsyncIterator[bytes],
        max_bytes: int,
    ) -> Written:
        rel = _file_path(raw_path)
        ns = await self.namespaces.ensure(caller.workspace_id, namespace, caller.actor)
        shown = paths.display(rel)
        begun: list[Intent] = []

        async def recorded() -> AsyncIterator[bytes]:
            # The intent is written once the last byte is in and before the runtime (which
            # commits only after the stream ends) renames the file into place; the digest is
            # what recovery compares to tell whether that rename happened.
            digest = _StreamDigest()
            size = 0
            async for chunk in chunks:
                await digest.add(chunk)
                size += len(chunk)
                yield chunk
            data = {"path": shown, "size_bytes": size}
            proof = {"rel": rel, "sha256": await digest.hexdigest(), "data": data}
            begun.append(
                await self.intents.begin(
                    caller.workspace_id, namespace, kinds.FILE_WRITE, caller.actor, proof
                )
            )

        try:
            async with self.locks.shared(caller.workspace_id, namespace):
                size = await self.runtime.write(ns, rel, recorded(), max_bytes)
        except Exception:
            # The runtime said the write failed: nothing was renamed into place.
            if begun:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.intents.abandon(begun[0]))
            raise
        except BaseException:
            # Cancelled: the rename may still complete in its thread; recovery checks later.
            if begun:
                self.intents.in_flight.discard(begun[0].intent_id)
            raise
        await self.intents.complete(begun[0], types.FILE_WRITTEN, {"path": shown, "size_bytes": size})
        return Written(path=shown, size_bytes=size)

    async def open(self, caller: Caller, namespace: str, raw_path: str) -> FileReader:
        rel = paths.normalize(raw_path)
        ns = await self.namespaces.find(caller.workspace_id, namespace)
        if not rel:
            raise IsADirectoryError_("Is a directory: workspace/")
        if ns is None:
            raise PathNotFoundError(f"Path not found: {paths.display(rel)}")
        return await self.runtime.open_file(ns, rel)

    async def preview(self, caller: Caller, namespace: str, raw_path: str) -> Preview:
        reader = await self.open(caller, namespace, raw_path)
        try:
            limit = min(reader.stat.size, PREVIEW_MAX_BYTES)
            head = b"".join([chunk async for chunk in reader.iter_bytes(0, limit)])
        finally:
            await reader.aclose()
        truncated = reader.stat.size > PREVIEW_MAX_BYTES
        return Preview(stat=reader.stat, content=_decode_text(head, truncated), truncated=truncated)

    async def list(
        self,
        caller: Caller,
        namespace: str,
        raw_path: str,
        *,
        recursive: bool,
        max_entries: int,
        max_depth: int,
    ) -> tuple[list[FileStat], bool]:
        rel = paths.normalize(raw_path)
        ns = await self.namespaces.find(caller.workspace_id, namespace)
        if ns is None:
            if rel:
                raise PathNotFoundError(f"Path not found: {paths.display(rel)}")
            return [], False
        return await self.runtime.list_dir(
            ns, rel, recursive=recursive, max_entries=max_entries, max_depth=max_depth
        )

    async def delete(self, caller: Caller, namespace: str, raw_path: str) -> str:
        rel = paths.normalize(raw_path)
        if not rel:
            raise RootDeleteRefusedError(
                "Refusing to delete the namespace root (workspace/); delete its contents instead"
            )
        ns = await self.namespaces.find(caller.workspace_id, namespace)
        if ns is None:
            raise PathNotFoundError(f"Path not found: {paths.display(rel)}")
        shown = paths.display(rel)
        data = {"path": shown}
        async with self.locks.shared(caller.workspace_id, namespace):
            intent = await self.intents.begin(
                caller.workspace_id, namespace, kinds.FILE_DELETE, caller.actor, {"rel": rel, "data": data}
            )
            async with self.intents.around(intent):
                await self.runtime.delete(ns, rel)
        await self.intents.complete(intent, types.FILE_DELETED, data)
        return shown


class _StreamDigest:
    """SHA-256 of a stream, hashed in a worker thread while the stream moves on (hashlib releases
    the GIL): inline, the hashing was a third of the API's CPU on an upload, in series with
    everything else. Batches are hashed in order, one at a time, so at most two wait in memory."""

    BATCH_BYTES = 256 * 1024

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._batch: list[bytes] = []
        self._batched = 0
        self._hashing: asyncio.Future[None] | None = None

    async def add(self, chunk: bytes) -> None:
        # Kept until hashed: a buffer its producer could reuse is copied first.
        self._batch.append(chunk if isinstance(chunk, bytes) else bytes(chunk))
        self._batched += len(chunk)
        if self._batched >= self.BATCH_BYTES:
            await self._hand_over()

    async def _hand_over(self) -> None:
        if self._hashing is not None:
            await self._hashing
        batch, self._batch, self._batched = self._batch, [], 0
        self._hashing = asyncio.ensure_future(asyncio.to_thread(_hash_all, self._digest, batch))

    async def hexdigest(self) -> str:
        await self._hand_over()
        assert self._hashing is not None
        await self._hashing
        return self._digest.hexdigest()


def _hash_all(digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)


def _file_path(raw_path: str) -> str:
    rel = paths.normalize(raw_path)
    if not rel:
        raise PathRejectedError("Path rejected: name a file inside workspace/, not the root")
    return rel


def _decode_text(head: bytes, truncated: bool) -> str | None:
    """UTF-8 text, or None for binary (invalid UTF-8 or a NUL byte; WIRE.md A7)."""
    if b"\x00" in head:
        return None
    if truncated:
        # Cut back to a character boundary so a multibyte char split by the cap is not "binary".
        for cut in range(0, 4):
            try:
                return head[: len(head) - cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return None
