"""envd's HTTP side: ``/health`` and ``/files`` (download, multipart and octet-stream upload), streamed."""

from __future__ import annotations

import functools
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.formparsers import MultiPartParser

from trove_api.e2b import paths
from trove_api.e2b.access import sandbox_caller
from trove_api.e2b.request_checks import E2bApiError
from trove_api.e2b.sandboxes import SandboxService
from trove_api.services.auth import Caller
from trove_core.errors import PayloadTooLargeError, TroveError

router = APIRouter(prefix="/e2b", include_in_schema=False)
Handler = Callable[..., Awaitable[Response]]
CHUNK = 1 << 20


def envd_errors(handler: Handler) -> Handler:
    """Errors as envd answers them: ``{"code", "message"}`` with the status the SDK maps."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except E2bApiError as exc:
            return JSONResponse({"code": exc.status, "message": exc.message}, status_code=exc.status)
        except TroveError as exc:
            return JSONResponse({"code": exc.status, "message": str(exc)}, status_code=exc.status)

    return wrapped


def _service(request: Request) -> SandboxService:
    svc: SandboxService = request.app.state.e2b
    return svc


@router.get("/health")
@envd_errors
async def health(request: Request) -> Response:
    await sandbox_caller(_service(request).records, request.headers)
    return Response(status_code=204)


@router.get("/files")
@envd_errors
async def download(request: Request) -> Response:
    rec, caller = await sandbox_caller(_service(request).records, request.headers)
    rel = paths.to_trove(request.query_params.get("path", ""))
    reader = await _service(request).ctx.files.open(caller, rec.sandbox_id, f"workspace/{rel}")

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in reader.iter_bytes(0, reader.stat.size):
                yield chunk
        finally:
            await reader.aclose()

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"Content-Length": str(reader.stat.size)},
    )


@router.post("/files")
@envd_errors
async def upload(request: Request) -> Response:
    svc = _service(request)
    rec, caller = await sandbox_caller(svc.records, request.headers)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return JSONResponse(await _multipart(request, svc, caller, rec.sandbox_id))
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise E2bApiError(400, f"Content-Encoding {encoding[:40]!r}: only gzip is accepted")
    rel = paths.to_trove(request.query_params.get("path", ""))
    declared = request.headers.get("content-length")
    body: AsyncIterator[bytes] = request.stream()
    size = int(declared) if declared and declared.isdigit() else None
    if encoding == "gzip":
        # The compressed length says nothing of the file's: the file service caps what comes out.
        body, size = gunzipped(body), None
    written = await svc.ctx.files.upload(caller, rec.sandbox_id, f"workspace/{rel}", body, size)
    return JSONResponse([_write_info(written.path)])


async def _multipart(
    request: Request, svc: SandboxService, caller: Caller, sandbox_id: str
) -> list[dict[str, Any]]:
    # Starlette spools each part to a temporary file past 1 MB: never a whole upload in memory;
    # the whole body is capped as one upload is, so the spool cannot fill the disk either.
    cap = svc.ctx.files.upload_max_bytes
    parser = MultiPartParser(request.headers, capped(request.stream(), cap), max_files=1000, max_fields=1000)
    form = await parser.parse()
    single = request.query_params.get("path")
    results = []
    try:
        for _, part in form.multi_items():
            if isinstance(part, str):
                continue
            rel = paths.to_trove(single if single else (part.filename or ""))

            async def chunks(f: Any = part) -> AsyncIterator[bytes]:
                while data := await f.read(CHUNK):
                    yield data

            written = await svc.ctx.files.upload(caller, sandbox_id, f"workspace/{rel}", chunks(), part.size)
            results.append(_write_info(written.path))
    finally:
        await form.close()
    return results


async def capped(chunks: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLargeError(
                f"The multipart body is over {limit} bytes; upload large files one by one"
            )
        yield chunk


async def gunzipped(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Decompress a streamed gzip body piecewise: at most CHUNK bytes of output held at once."""
    inflater = zlib.decompressobj(wbits=31)
    async for chunk in chunks:
        data = chunk
        while data:
            try:
                out = inflater.decompress(data, CHUNK)
            except zlib.error as exc:
                raise E2bApiError(400, f"the body is not valid gzip ({exc})") from None
            data = inflater.unconsumed_tail
            if out:
                yield out
        if inflater.eof and inflater.unused_data:
            raise E2bApiError(400, "the body holds data after the end of its gzip stream")
    while out := inflater.decompress(b"", CHUNK):  # what the last input left buffered
        yield out
    if not inflater.eof:
        raise E2bApiError(400, "the gzip body ended early")


def _write_info(shown: str) -> dict[str, Any]:
    rel = shown.removeprefix("workspace/").rstrip("/")
    return {"name": rel.rsplit("/", 1)[-1], "type": "file", "path": paths.to_e2b(rel)}
