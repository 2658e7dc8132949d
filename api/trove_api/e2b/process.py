"""envd's ``process.Process`` Connect service: E2B's commands and terminals (``commands``).

Output streams are bounded end to end: a small queue between the runtime's reader and the
response, so a process flooding output is read only as fast as the client takes it (the
runtime keeps a bounded buffer behind it). Idle streams carry keep-alive events at the
interval the SDK asks for (``Keepalive-Ping-Interval``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import DescService, Oneof

from trove_api.e2b import commands
from trove_api.e2b.access import sandbox_caller
from trove_api.e2b.envd import process_pb as pb
from trove_api.e2b.envd.process_connect import Process as ProcessProtocol
from trove_api.e2b.filesystem import connect_error
from trove_api.e2b.records import SandboxRecord
from trove_api.e2b.sandboxes import SandboxService
from trove_core.errors import ProcessLimitReachedError, ProcessStdinClosedError
from trove_core.runtime import NamespaceRef, ProcessEnd, ProcessOutput, PtySize

KEEPALIVE_HEADER = "keepalive-ping-interval"
QUEUE_CHUNKS = 8
Event = pb.ProcessEvent


def _error(exc: Exception) -> ConnectError:
    if isinstance(exc, ProcessStdinClosedError):
        return ConnectError(Code.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, ProcessLimitReachedError):
        return ConnectError(Code.RESOURCE_EXHAUSTED, str(exc))
    return connect_error(exc)


def _start(pid: int) -> Event:
    start: Oneof[Literal["start"], Event.StartEvent] = Oneof(field="start", value=Event.StartEvent(pid=pid))
    return Event(event=start)


_KEEPALIVE: Oneof[Literal["keepalive"], Event.KeepAlive] = Oneof(field="keepalive", value=Event.KeepAlive())


def _data(item: ProcessOutput) -> Event:
    output: Oneof[Literal["stdout"], bytes] | Oneof[Literal["stderr"], bytes] | Oneof[Literal["pty"], bytes]
    if item.stream == "stdout":
        stdout: Oneof[Literal["stdout"], bytes] = Oneof(field="stdout", value=item.data)
        output = stdout
    elif item.stream == "stderr":
        stderr: Oneof[Literal["stderr"], bytes] = Oneof(field="stderr", value=item.data)
        output = stderr
    else:
        pty: Oneof[Literal["pty"], bytes] = Oneof(field="pty", value=item.data)
        output = pty
    data: Oneof[Literal["data"], Event.DataEvent] = Oneof(field="data", value=Event.DataEvent(output=output))
    return Event(event=data)


def _dropped(item: ProcessOutput) -> Event:
    """Said where the client reads it: a reader slower than the process lost the oldest output
    (the runtime keeps a bounded buffer per process rather than stalling or growing)."""
    note = f"\n[trove: {item.dropped} bytes of output dropped: this reader fell behind]\n".encode()
    return _data(
        ProcessOutput(stream="pty" if item.stream == "pty" else "stderr", data=note, cursor=item.cursor)
    )


def _end(item: ProcessEnd) -> Event:
    code = item.exit_code
    status = f"signal: {code - 128}" if code > 128 else f"exit status {code}"
    end: Oneof[Literal["end"], Event.EndEvent] = Oneof(
        field="end", value=Event.EndEvent(exit_code=code, exited=True, status=status)
    )
    return Event(event=end)


def _keepalive_s(ctx: RequestContext[Any, Any]) -> float:
    try:
        return min(max(float(ctx.request_headers.get(KEEPALIVE_HEADER, "50")), 1.0), 300.0)
    except ValueError:
        return 50.0


def _selector(selector: pb.ProcessSelector | None) -> tuple[int | None, str | None]:
    chosen = selector.selector if selector is not None else None
    if chosen is None:
        raise ConnectError(Code.INVALID_ARGUMENT, "no process selected (pid or tag)")
    return (chosen.value, None) if chosen.field == "pid" else (None, str(chosen.value))


class ProcessService:
    def __init__(
        self, service: Callable[[], SandboxService], processes: Callable[[], commands.E2bProcesses]
    ) -> None:
        self._service = service
        self._processes = processes

    @classmethod
    def desc(cls) -> DescService:
        return ProcessProtocol.desc()

    async def _rec(self, ctx: RequestContext[Any, Any]) -> SandboxRecord:
        try:
            rec, _caller = await sandbox_caller(self._service().records, ctx.request_headers)
        except Exception as exc:
            raise connect_error(exc) from None
        return rec

    async def _target(
        self, selector: pb.ProcessSelector | None, ctx: RequestContext[Any, Any]
    ) -> tuple[NamespaceRef, int]:
        rec = await self._rec(ctx)
        pid, tag = _selector(selector)
        try:
            ns, info = await self._processes().find(rec, pid, tag)
        except Exception as exc:
            raise _error(exc) from None
        return ns, info.pid

    async def _events(
        self, ns: NamespaceRef, pid: int, cursor: int, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[Event]:
        queue: asyncio.Queue[ProcessOutput | ProcessEnd | Exception] = asyncio.Queue(QUEUE_CHUNKS)

        async def pump() -> None:
            try:
                # Closed at once when the client goes: the runtime's reader holds the process.
                async with contextlib.aclosing(self._processes().output(ns, pid, cursor)) as items:
                    async for item in items:
                        await queue.put(item)
            except Exception as exc:
                await queue.put(exc)

        reader = asyncio.create_task(pump(), name=f"e2b-output-{pid}")
        keepalive = _keepalive_s(ctx)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), keepalive)
                except TimeoutError:
                    yield Event(event=_KEEPALIVE)
                    continue
                if isinstance(item, Exception):
                    raise _error(item)
                if isinstance(item, ProcessEnd):
                    yield _end(item)
                    return
                if item.dropped:
                    yield _dropped(item)
                if item.data:
                    yield _data(item)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def list(self, request: pb.ListRequest, ctx: RequestContext[Any, Any]) -> pb.ListResponse:
        rec = await self._rec(ctx)
        try:
            running = await self._processes().running(rec)
        except Exception as exc:
            raise _error(exc) from None
        return pb.ListResponse(
            processes=[
                pb.ProcessInfo(
                    pid=info.pid,
                    tag=info.tag,
                    config=pb.ProcessConfig(
                        cmd=info.argv[0],
                        args=list(info.argv[1:]),
                        envs=dict(info.env),
                        cwd=commands.e2b_cwd(info.cwd),
                    ),
                )
                for info in running
            ]
        )

    async def connect(
        self, request: pb.ConnectRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.ConnectResponse]:
        ns, pid = await self._target(request.process, ctx)
        yield pb.ConnectResponse(event=_start(pid))
        # From the start of its kept output, as E2B's envd replays what a process printed.
        async for event in self._events(ns, pid, 0, ctx):
            yield pb.ConnectResponse(event=event)

    async def start(
        self, request: pb.StartRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.StartResponse]:
        rec = await self._rec(ctx)
        config = request.process or pb.ProcessConfig()
        if not config.cmd:
            raise ConnectError(Code.INVALID_ARGUMENT, "process.cmd is empty")
        size = request.pty.size if request.pty is not None else None
        remaining_ms = ctx.timeout_ms
        try:
            ns, info = await self._processes().start(
                rec,
                cmd=config.cmd,
                args=list(config.args),
                envs=dict(config.envs),
                cwd=config.cwd if config.has_field("cwd") else None,
                pty=PtySize(rows=size.rows or 24, cols=size.cols or 80)
                if request.pty is not None and size
                else None,
                tag=request.tag if request.has_field("tag") else None,
                # Older SDKs leave it out and expect a stdin (envd's default).
                stdin=request.stdin if request.has_field("stdin") else True,
                timeout_s=None if remaining_ms is None else remaining_ms / 1000,
            )
        except Exception as exc:
            raise _error(exc) from None
        yield pb.StartResponse(event=_start(info.pid))
        async for event in self._events(ns, info.pid, info.cursor, ctx):
            yield pb.StartResponse(event=event)

    async def update(self, request: pb.UpdateRequest, ctx: RequestContext[Any, Any]) -> pb.UpdateResponse:
        ns, pid = await self._target(request.process, ctx)
        size = request.pty.size if request.pty is not None else None
        if size is None:
            return pb.UpdateResponse()
        try:
            await self._processes().resize(ns, pid, PtySize(rows=size.rows, cols=size.cols))
        except Exception as exc:
            raise _error(exc) from None
        return pb.UpdateResponse()

    async def _write(self, ns: NamespaceRef, pid: int, given: pb.ProcessInput | None) -> None:
        chosen = given.input if given is not None else None
        if chosen is None or not chosen.value:
            return
        try:
            await self._processes().write_stdin(ns, pid, chosen.value)
        except Exception as exc:
            raise _error(exc) from None

    async def stream_input(
        self, request: AsyncIterator[pb.StreamInputRequest], ctx: RequestContext[Any, Any]
    ) -> pb.StreamInputResponse:
        target: tuple[NamespaceRef, int] | None = None
        async for message in request:
            event = message.event
            if event is None or event.field == "keepalive":
                continue
            if event.field == "start":
                assert isinstance(event.value, pb.StreamInputRequest.StartEvent)
                target = await self._target(event.value.process, ctx)
            elif target is None:
                raise ConnectError(Code.INVALID_ARGUMENT, "input before the start event")
            else:
                assert isinstance(event.value, pb.StreamInputRequest.DataEvent)
                await self._write(*target, event.value.input)
        return pb.StreamInputResponse()

    async def send_input(
        self, request: pb.SendInputRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SendInputResponse:
        ns, pid = await self._target(request.process, ctx)
        await self._write(ns, pid, request.input)
        return pb.SendInputResponse()

    async def send_signal(
        self, request: pb.SendSignalRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SendSignalResponse:
        ns, pid = await self._target(request.process, ctx)
        signum = request.signal.value if request.signal.value else pb.Signal.SIGTERM.value
        try:
            await self._processes().signal(ns, pid, signum)
        except Exception as exc:
            raise _error(exc) from None
        return pb.SendSignalResponse()

    async def close_stdin(
        self, request: pb.CloseStdinRequest, ctx: RequestContext[Any, Any]
    ) -> pb.CloseStdinResponse:
        ns, pid = await self._target(request.process, ctx)
        try:
            await self._processes().close_stdin(ns, pid)
        except Exception as exc:
            raise _error(exc) from None
        return pb.CloseStdinResponse()
