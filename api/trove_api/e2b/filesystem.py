"""envd's ``filesystem.Filesystem`` Connect service over Trove's file service and event log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shlex
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import DescService, Oneof
from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from trove_api.e2b import paths
from trove_api.e2b.access import sandbox_caller
from trove_api.e2b.envd import filesystem_pb as pb
from trove_api.e2b.envd.filesystem_connect import Filesystem as FilesystemProtocol
from trove_api.e2b.request_checks import E2bApiError
from trove_api.e2b.sandboxes import SandboxService
from trove_api.events import feed, types
from trove_api.services.auth import Caller, key_is_active
from trove_core.errors import BadRequestError, ForbiddenError, NotFoundError, TroveError, UnauthenticatedError
from trove_core.paths import display
from trove_core.runtime import FileStat

log = logging.getLogger(__name__)
WATCHER_BACKLOG = 10_000
# Each polled watcher is a task following the hub: a client may not pile them up.
WATCHERS_PER_SANDBOX = 64


_START: Oneof[Literal["start"], pb.WatchDirResponse.StartEvent] = Oneof(
    field="start", value=pb.WatchDirResponse.StartEvent()
)
_KEEPALIVE: Oneof[Literal["keepalive"], pb.WatchDirResponse.KeepAlive] = Oneof(
    field="keepalive", value=pb.WatchDirResponse.KeepAlive()
)


def _changed(event: pb.FilesystemEvent) -> Oneof[Literal["filesystem"], pb.FilesystemEvent]:
    return Oneof(field="filesystem", value=event)


def connect_error(exc: Exception) -> ConnectError:
    if isinstance(exc, ConnectError):
        return exc
    if isinstance(exc, E2bApiError):
        code = {401: Code.UNAUTHENTICATED, 404: Code.NOT_FOUND, 502: Code.UNAVAILABLE}.get(
            exc.status, Code.UNIMPLEMENTED if exc.status == 501 else Code.INVALID_ARGUMENT
        )
        return ConnectError(code, exc.message)
    if isinstance(exc, NotFoundError):
        return ConnectError(Code.NOT_FOUND, str(exc))
    if isinstance(exc, BadRequestError):
        return ConnectError(Code.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, UnauthenticatedError):
        return ConnectError(Code.UNAUTHENTICATED, str(exc))
    if isinstance(exc, ForbiddenError):
        return ConnectError(Code.PERMISSION_DENIED, str(exc))
    if isinstance(exc, TroveError) and exc.status == 503:
        return ConnectError(Code.UNAVAILABLE, str(exc))
    log.error("e2b filesystem call failed", exc_info=exc)
    return ConnectError(Code.INTERNAL, str(exc) if isinstance(exc, TroveError) else "internal error")


def entry_info(stat: FileStat) -> pb.EntryInfo:
    seconds, nanos = divmod(stat.mtime_ns, 1_000_000_000)
    return pb.EntryInfo(
        name=stat.rel.rsplit("/", 1)[-1] if stat.rel else "user",
        type=pb.FileType.DIRECTORY if stat.is_dir else pb.FileType.FILE,
        path=paths.to_e2b(stat.rel),
        size=stat.size,
        mode=0o755 if stat.is_dir else 0o644,
        permissions="drwxr-xr-x" if stat.is_dir else "-rw-r--r--",
        owner="user",
        group="user",
        modified_time=Timestamp(seconds=seconds, nanos=nanos),
    )


class FilesystemService:
    """Every call names its sandbox in headers (``E2b-Sandbox-Id``, ``X-Access-Token``)."""

    @classmethod
    def desc(cls) -> DescService:
        return FilesystemProtocol.desc()

    def __init__(self, service: Callable[[], SandboxService]) -> None:
        self._service = service
        self._watchers: dict[str, tuple[str, asyncio.Task[None], list[pb.FilesystemEvent]]] = {}

    async def _who(self, ctx: RequestContext[Any, Any]) -> tuple[SandboxService, str, Caller]:
        svc = self._service()
        try:
            rec, caller = await sandbox_caller(svc.records, ctx.request_headers)
        except Exception as exc:
            raise connect_error(exc) from None
        return svc, rec.sandbox_id, caller

    async def _stat(self, svc: SandboxService, sandbox_id: str, caller: Caller, rel: str) -> FileStat:
        if not rel:
            return FileStat(rel="", is_dir=True, size=0, mtime_ns=0)
        parent, _, _name = rel.rpartition("/")
        try:
            entries, _ = await svc.ctx.files.list(
                caller, sandbox_id, f"workspace/{parent}", recursive=False, max_entries=1_000_000, max_depth=1
            )
        except (NotFoundError, BadRequestError):  # a missing or non-directory parent
            entries = []
        for entry in entries:
            if entry.rel == rel:
                return entry
        raise ConnectError(Code.NOT_FOUND, f"path not found: {paths.to_e2b(rel)}")

    async def stat(self, request: pb.StatRequest, ctx: RequestContext[Any, Any]) -> pb.StatResponse:
        svc, sandbox_id, caller = await self._who(ctx)
        try:
            rel = paths.to_trove(request.path)
            return pb.StatResponse(entry=entry_info(await self._stat(svc, sandbox_id, caller, rel)))
        except Exception as exc:
            raise connect_error(exc) from None

    async def list_dir(self, request: pb.ListDirRequest, ctx: RequestContext[Any, Any]) -> pb.ListDirResponse:
        svc, sandbox_id, caller = await self._who(ctx)
        try:
            rel = paths.to_trove(request.path)
            if not (await self._stat(svc, sandbox_id, caller, rel)).is_dir:
                raise ConnectError(Code.INVALID_ARGUMENT, f"not a directory: {request.path}")
            depth = max(request.depth, 1)
            entries, _ = await svc.ctx.files.list(
                caller,
                sandbox_id,
                f"workspace/{rel}",
                recursive=depth > 1,
                max_entries=100_000,
                max_depth=depth,
            )
            return pb.ListDirResponse(entries=[entry_info(e) for e in entries])
        except Exception as exc:
            raise connect_error(exc) from None

    async def _shell(self, svc: SandboxService, sandbox_id: str, caller: Caller, command: str) -> None:
        # Trove's Runtime has no mkdir or rename: a one-shot exec does it (and emits exec.completed).
        result = await svc.ctx.execs.run(caller, sandbox_id, command, None)
        if result.exit_code != 0:
            raise ConnectError(Code.INVALID_ARGUMENT, result.stderr.strip()[:500] or "failed")

    async def make_dir(self, request: pb.MakeDirRequest, ctx: RequestContext[Any, Any]) -> pb.MakeDirResponse:
        svc, sandbox_id, caller = await self._who(ctx)
        try:
            rel = paths.to_trove(request.path)
            try:
                await self._stat(svc, sandbox_id, caller, rel)
            except ConnectError:
                pass
            else:
                raise ConnectError(Code.ALREADY_EXISTS, f"already exists: {request.path}")
            await self._shell(svc, sandbox_id, caller, f"mkdir -p -- {shlex.quote('workspace/' + rel)}")
            return pb.MakeDirResponse(entry=entry_info(await self._stat(svc, sandbox_id, caller, rel)))
        except Exception as exc:
            raise connect_error(exc) from None

    async def move(self, request: pb.MoveRequest, ctx: RequestContext[Any, Any]) -> pb.MoveResponse:
        svc, sandbox_id, caller = await self._who(ctx)
        try:
            src, dst = paths.to_trove(request.source), paths.to_trove(request.destination)
            if not src or not dst:
                raise ConnectError(Code.INVALID_ARGUMENT, "cannot move the home directory")
            await self._stat(svc, sandbox_id, caller, src)
            # As envd does, the destination's parent directories are made first.
            parent, old, new = (shlex.quote("workspace/" + p) for p in (dst.rpartition("/")[0], src, dst))
            script = f"mkdir -p -- {parent} && mv -T -- {old} {new}"
            await self._shell(svc, sandbox_id, caller, script)
            moved = await self._stat(svc, sandbox_id, caller, dst)
            await self._report_move(svc, sandbox_id, caller, src, moved)
            return pb.MoveResponse(entry=entry_info(moved))
        except Exception as exc:
            raise connect_error(exc) from None

    async def _report_move(
        self, svc: SandboxService, sandbox_id: str, caller: Caller, src: str, moved: FileStat
    ) -> None:
        """A rename in Trove's terms, so watches, SSE and webhooks see it: the old path deleted
        (``renamed_to``), every file at the new one written (``renamed_from``)."""
        written = [moved]
        if moved.is_dir:
            under = f"workspace/{moved.rel}"
            written, _ = await svc.ctx.files.list(
                caller, sandbox_id, under, recursive=True, max_entries=100_000, max_depth=64
            )

        async def emit(type_: str, data: dict[str, Any]) -> None:
            await svc.ctx.emitter.emit(
                workspace_id=caller.workspace_id,
                namespace=sandbox_id,
                type_=type_,
                actor=caller.actor,
                data=data,
            )

        # The extra keys tell a rename from a delete and a write (event data only gains keys).
        await emit(types.FILE_DELETED, {"path": display(src), "renamed_to": display(moved.rel)})
        for entry in written:
            if not entry.is_dir:
                origin = src + entry.rel[len(moved.rel) :]
                data = {"path": display(entry.rel), "size_bytes": entry.size, "renamed_from": display(origin)}
                await emit(types.FILE_WRITTEN, data)

    async def remove(self, request: pb.RemoveRequest, ctx: RequestContext[Any, Any]) -> pb.RemoveResponse:
        svc, sandbox_id, caller = await self._who(ctx)
        try:
            await svc.ctx.files.delete(caller, sandbox_id, f"workspace/{paths.to_trove(request.path)}")
            return pb.RemoveResponse()
        except Exception as exc:
            raise connect_error(exc) from None

    # -- watching: Trove's event log sees every change, whichever API made it -------------------

    async def _events(
        self, svc: SandboxService, sandbox_id: str, caller: Caller, rel: str, recursive: bool, after: int
    ) -> AsyncGenerator[pb.FilesystemEvent | None, None]:
        scope = feed.Scope(
            workspace_id=caller.workspace_id,
            namespace=sandbox_id,
            types=frozenset({types.FILE_WRITTEN, types.FILE_DELETED}),
        )
        prefix = f"{rel}/" if rel else ""
        follow = svc.ctx.hub.follow(scope, after=after, keepalive=svc.settings.sse_keepalive_s)
        async with contextlib.aclosing(follow) as events:
            async for event in events:
                if event is None:
                    # As an SSE stream does: a watch ends with its sandbox or its key.
                    if not await self._still_open(svc, sandbox_id, caller):
                        return
                    yield None
                    continue
                if not scope.admits(event["namespace"], event["type"]):
                    continue
                changed = str(event["data"].get("path", "")).removeprefix("workspace/").rstrip("/")
                if not changed.startswith(prefix):
                    continue
                name = changed[len(prefix) :]
                if not recursive and "/" in name:
                    continue
                kind = pb.EventType.WRITE if event["type"] == types.FILE_WRITTEN else pb.EventType.REMOVE
                yield pb.FilesystemEvent(name=name, type=kind)

    @staticmethod
    async def _still_open(svc: SandboxService, sandbox_id: str, caller: Caller) -> bool:
        rec = await asyncio.to_thread(svc.records.by_id, sandbox_id)
        if rec is None or rec.state != "running" or rec.key_id != caller.key_id:
            return False
        return await asyncio.to_thread(key_is_active, svc.records.db, caller.key_id)

    async def _watched(self, svc: SandboxService, sandbox_id: str, caller: Caller, path: str) -> str:
        rel = paths.to_trove(path)
        if not (await self._stat(svc, sandbox_id, caller, rel)).is_dir:
            raise ConnectError(Code.INVALID_ARGUMENT, f"not a directory: {path}")
        return rel

    async def watch_dir(
        self, request: pb.WatchDirRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.WatchDirResponse]:
        svc, sandbox_id, caller = await self._who(ctx)
        try:
            rel = await self._watched(svc, sandbox_id, caller, request.path)
        except Exception as exc:
            raise connect_error(exc) from None
        # Fixed before the start event: every change after it is reported.
        head = await svc.ctx.hub.current_head()
        yield pb.WatchDirResponse(event=_START)
        async for event in self._events(svc, sandbox_id, caller, rel, request.recursive, head):
            if event is None:
                yield pb.WatchDirResponse(event=_KEEPALIVE)
            else:
                yield pb.WatchDirResponse(event=_changed(event))

    async def create_watcher(
        self, request: pb.CreateWatcherRequest, ctx: RequestContext[Any, Any]
    ) -> pb.CreateWatcherResponse:
        svc, sandbox_id, caller = await self._who(ctx)
        try:
            rel = await self._watched(svc, sandbox_id, caller, request.path)
        except Exception as exc:
            raise connect_error(exc) from None
        if sum(1 for owner, _, _ in self._watchers.values() if owner == sandbox_id) >= WATCHERS_PER_SANDBOX:
            raise ConnectError(
                Code.RESOURCE_EXHAUSTED,
                f"at most {WATCHERS_PER_SANDBOX} watchers per sandbox; remove one first",
            )
        backlog: list[pb.FilesystemEvent] = []
        head = await svc.ctx.hub.current_head()

        async def collect() -> None:
            events = self._events(svc, sandbox_id, caller, rel, request.recursive, head)
            async with contextlib.aclosing(events):
                async for event in events:
                    if event is not None and len(backlog) < WATCHER_BACKLOG:
                        backlog.append(event)

        watcher_id = secrets.token_hex(8)
        self._watchers[watcher_id] = (sandbox_id, asyncio.create_task(collect()), backlog)
        return pb.CreateWatcherResponse(watcher_id=watcher_id)

    def _watcher(
        self, sandbox_id: str, watcher_id: str
    ) -> tuple[str, asyncio.Task[None], list[pb.FilesystemEvent]]:
        found = self._watchers.get(watcher_id)
        if found is None or found[0] != sandbox_id:
            raise ConnectError(Code.NOT_FOUND, f"watcher {watcher_id[:40]!r} not found")
        return found

    async def get_watcher_events(
        self, request: pb.GetWatcherEventsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetWatcherEventsResponse:
        _, sandbox_id, _ = await self._who(ctx)
        _, _, backlog = self._watcher(sandbox_id, request.watcher_id)
        events = list(backlog)
        backlog.clear()
        return pb.GetWatcherEventsResponse(events=events)

    async def remove_watcher(
        self, request: pb.RemoveWatcherRequest, ctx: RequestContext[Any, Any]
    ) -> pb.RemoveWatcherResponse:
        _, sandbox_id, _ = await self._who(ctx)
        _, task, _ = self._watcher(sandbox_id, request.watcher_id)
        del self._watchers[request.watcher_id]
        task.cancel()
        return pb.RemoveWatcherResponse()

    async def aclose(self) -> None:
        for _, task, _ in self._watchers.values():
            task.cancel()
        self._watchers.clear()
