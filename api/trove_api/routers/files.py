"""Files: POST /write, PUT and GET /files/{path}, POST /delete, GET /v1/files(/content)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import ClientDisconnect

from trove_api.deps import ContextDep, FsCallDep
from trove_api.ranges import plan_download
from trove_api.schemas.common import problems
from trove_api.schemas.files import (
    DeleteRequest,
    DeleteResult,
    FileContent,
    FileInfo,
    FileResult,
    ListResult,
    WriteRequest,
)
from trove_core import paths
from trove_core.clock import from_ns
from trove_core.errors import BadRequestError
from trove_core.runtime import FileReader
from trove_core.wire import LIST_MAX_DEPTH, LIST_MAX_ENTRIES

router = APIRouter(tags=["files"])


class AnyPathConvertor(PathConvertor):
    """A file path holding any character a name can: Starlette's ``path`` (``.*``) stops at a
    newline, and the route's closing ``$`` then matches before a trailing one, so
    ``/files/a%0Ab`` found no route and ``/files/a%0A`` named ``a``."""

    regex = "(?s:.*)"


register_url_convertor("anypath", AnyPathConvertor())


@router.post("/write", response_model=FileResult, responses=problems(400, 401, 403, 413, 422))
async def write_file(body: WriteRequest, call: FsCallDep, ctx: ContextDep) -> FileResult:
    """Atomically write UTF-8 text (creating parent directories). At most 10 MiB."""
    written = await ctx.files.write_text(call.caller, call.namespace, body.path, body.content)
    return FileResult(path=written.path, size_bytes=written.size_bytes)


@router.put(
    "/files/{path:anypath}",
    response_model=FileResult,
    responses=problems(400, 401, 403, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_file(path: str, request: Request, call: FsCallDep, ctx: ContextDep) -> FileResult:
    """Stream raw bytes to a file (at most 100 MiB), atomically: a broken upload leaves nothing."""
    declared = request.headers.get("content-length")
    try:
        written = await ctx.files.upload(
            call.caller,
            call.namespace,
            path,
            request.stream(),
            int(declared) if declared and declared.isdigit() else None,
        )
    except ClientDisconnect:
        # Nothing was written (the runtime discards its temp file); nobody is left to answer.
        raise BadRequestError("Upload interrupted: the client disconnected") from None
    return FileResult(path=written.path, size_bytes=written.size_bytes)


_DOWNLOAD_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."},
    206: {"content": {"application/octet-stream": {}}, "description": "The requested range."},
    **problems(400, 401, 403, 404, 416),
}


@router.get("/files/{path:anypath}", response_class=StreamingResponse, responses=_DOWNLOAD_RESPONSES)
async def download_file(path: str, request: Request, call: FsCallDep, ctx: ContextDep) -> Response:
    """Raw bytes (at most 100 MiB; `X-Trove-Size` is the full size, `X-Trove-Truncated` 1 if cut).

    Supports a single `Range: bytes=a-b` (206, `Content-Range`), `If-Range`, and a strong `ETag`.
    """
    reader = await ctx.files.open(call.caller, call.namespace, path)
    try:
        plan = plan_download(
            size=reader.stat.size,
            mtime_ns=reader.stat.mtime_ns,
            max_bytes=ctx.settings.read_max_bytes,
            range_header=request.headers.get("range"),
            if_range=request.headers.get("if-range"),
        )
    except BaseException:
        await reader.aclose()
        raise
    if request.method == "HEAD":
        await reader.aclose()
        return Response(status_code=plan.status, headers=plan.headers, media_type="application/octet-stream")
    return StreamingResponse(
        _stream(reader, plan.start, plan.end),
        status_code=plan.status,
        headers=plan.headers,
        media_type="application/octet-stream",
        background=BackgroundTask(reader.aclose),
    )


# HEAD shares the handler; a separate route gives it its own OpenAPI operation id (one route
# with both methods would emit a duplicate id, and a warning on every /openapi.json).
router.add_api_route(
    "/files/{path:anypath}",
    download_file,
    methods=["HEAD"],
    response_class=StreamingResponse,
    responses=_DOWNLOAD_RESPONSES,
    operation_id="head_file",
    summary="Head File",
)


async def _stream(reader: FileReader, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        async for chunk in reader.iter_bytes(start, end):
            yield chunk
    finally:
        await reader.aclose()


@router.post("/delete", response_model=DeleteResult, responses=problems(400, 401, 403, 404))
async def delete_path(body: DeleteRequest, call: FsCallDep, ctx: ContextDep) -> DeleteResult:
    """Delete a file or a directory tree (recursive). The namespace root itself is refused."""
    shown = await ctx.files.delete(call.caller, call.namespace, body.path)
    return DeleteResult(deleted=shown)


@router.get("/v1/files", response_model=ListResult, responses=problems(400, 401, 403, 404))
async def list_files(
    call: FsCallDep,
    ctx: ContextDep,
    path: Annotated[str, Query(description="Directory, with or without workspace/.")] = "workspace/",
    recursive: Annotated[bool, Query(description="All descendants, depth first.")] = False,
) -> ListResult:
    """Directories first, then files, alphabetical. Recursive listings stop at 1000 entries or
    20 levels and then say `truncated: true`. A namespace never written lists as empty."""
    entries, truncated = await ctx.files.list(
        call.caller,
        call.namespace,
        path,
        recursive=recursive,
        max_entries=LIST_MAX_ENTRIES,
        max_depth=LIST_MAX_DEPTH,
    )
    return ListResult(
        entries=[
            FileInfo(
                name=paths.printable(paths.basename(e.rel)),
                path=paths.printable(paths.display(e.rel)),
                is_dir=e.is_dir,
                size_bytes=None if e.is_dir else e.size,
                modified_at=from_ns(e.mtime_ns),
            )
            for e in entries
        ],
        truncated=truncated,
    )


@router.get("/v1/files/content", response_model=FileContent, responses=problems(400, 401, 403, 404))
async def read_content(
    call: FsCallDep,
    ctx: ContextDep,
    path: Annotated[str, Query(description="File, with or without workspace/.")],
) -> FileContent:
    """A text preview (first 1 MiB). Binary files answer `encoding: binary`, `content: null`."""
    preview = await ctx.files.preview(call.caller, call.namespace, path)
    return FileContent(
        path=paths.display(preview.stat.rel),
        size_bytes=preview.stat.size,
        modified_at=from_ns(preview.stat.mtime_ns),
        encoding="binary" if preview.content is None else "utf-8",
        content=preview.content,
        truncated=preview.truncated,
    )
