"""envd's ``process.Process`` Connect service: mounted, authenticated, not served yet.

Commands and terminals need processes that outlive a call (the Runtime's process methods,
issue 15); until they land every method answers ``UNIMPLEMENTED`` with a plain reason, which
the SDK raises as a ``SandboxException``. The next step fills these methods in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import DescService

from trove_api.e2b.access import sandbox_caller
from trove_api.e2b.envd import process_pb as pb
from trove_api.e2b.envd.process_connect import Process as ProcessProtocol
from trove_api.e2b.filesystem import connect_error
from trove_api.e2b.sandboxes import SandboxService

NOT_YET = (
    "commands and pty are not served by Trove's E2B-compatible API yet: they need processes "
    "that outlive a call (see the README's 'Using the E2B SDK')"
)


class ProcessService:
    def __init__(self, service: Callable[[], SandboxService]) -> None:
        self._service = service

    @classmethod
    def desc(cls) -> DescService:
        return ProcessProtocol.desc()

    async def _refuse(self, ctx: RequestContext[Any, Any]) -> NoReturn:
        try:
            await sandbox_caller(self._service().records, ctx.request_headers)
        except Exception as exc:
            raise connect_error(exc) from None
        raise ConnectError(Code.UNIMPLEMENTED, NOT_YET)

    async def list(self, request: pb.ListRequest, ctx: RequestContext[Any, Any]) -> pb.ListResponse:
        await self._refuse(ctx)

    async def connect(
        self, request: pb.ConnectRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.ConnectResponse]:
        await self._refuse(ctx)
        yield pb.ConnectResponse()  # never reached: makes this the stream the protocol expects

    async def start(
        self, request: pb.StartRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.StartResponse]:
        await self._refuse(ctx)
        yield pb.StartResponse()  # never reached

    async def update(self, request: pb.UpdateRequest, ctx: RequestContext[Any, Any]) -> pb.UpdateResponse:
        await self._refuse(ctx)

    async def stream_input(
        self, request: AsyncIterator[pb.StreamInputRequest], ctx: RequestContext[Any, Any]
    ) -> pb.StreamInputResponse:
        await self._refuse(ctx)

    async def send_input(
        self, request: pb.SendInputRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SendInputResponse:
        await self._refuse(ctx)

    async def send_signal(
        self, request: pb.SendSignalRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SendSignalResponse:
        await self._refuse(ctx)

    async def close_stdin(
        self, request: pb.CloseStdinRequest, ctx: RequestContext[Any, Any]
    ) -> pb.CloseStdinResponse:
        await self._refuse(ctx)
