"""Every error rendered as problem+json with a string ``detail`` (the official client shows it)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from trove_api.schemas.common import UNICODE_ERROR_TYPE, UNICODE_MESSAGE
from trove_core.diskspace import STORAGE_FULL_ERRNOS
from trove_core.errors import (
    HttpError,
    InvalidRequestError,
    InvalidUnicodeError,
    MethodNotAllowedError,
    RouteNotFoundError,
    StorageFullError,
    TroveError,
)
from trove_core.wire import HEADER_REQUEST_ID

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "https://trove.dev/problems/"


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id = request_id_of(request)
    body: dict[str, Any] = {
        "type": _TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    all_headers = {HEADER_REQUEST_ID: request_id} if request_id else {}
    # Crashes are answered outside RequestContextMiddleware (which adds it everywhere else).
    all_headers["X-Content-Type-Options"] = "nosniff"
    all_headers.update(headers or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=all_headers)


async def _trove_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TroveError)
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    elif exc.status in (429, 503):
        headers["Retry-After"] = "1"
    detail = exc.detail
    if exc.internal:
        detail = f"{exc.detail} (request id {request_id_of(request)}; the server log has the details)"
    if exc.status >= 500 or exc.internal:
        log.error("request %s failed: %s", request_id_of(request), exc.internal or exc.detail)
    return problem_response(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=detail,
        extra=exc.extra,
        headers=headers,
    )


def flatten_validation(errors: Any) -> str:
    parts = []
    for error in errors:
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        message = str(error.get("msg", "invalid"))
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts) or "Invalid request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    unencodable = [error for error in exc.errors() if error.get("type") == UNICODE_ERROR_TYPE]
    if unencodable:
        # Text that cannot be UTF-8 is bad input like a bad path (400), not a schema mismatch.
        return problem_response(
            request,
            status=InvalidUnicodeError.status,
            code=InvalidUnicodeError.code,
            title=InvalidUnicodeError.title,
            detail=flatten_validation([{**error, "msg": UNICODE_MESSAGE} for error in unencodable]),
        )
    return problem_response(
        request,
        status=InvalidRequestError.status,
        code=InvalidRequestError.code,
        title=InvalidRequestError.title,
        detail=flatten_validation(exc.errors()),
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, TroveError):
        # FastAPI turns any error raised while it reads a body into "400 error parsing the
        # body"; the body cap (middleware) raises PayloadTooLargeError there, which must stay 413.
        return await _trove_error(request, exc.__cause__)
    code = {404: RouteNotFoundError.code, 405: MethodNotAllowedError.code}.get(
        exc.status_code, HttpError.code
    )
    detail = str(exc.detail)
    if exc.status_code == 404:
        detail = f"No route for {request.method} {request.url.path}"
    return problem_response(
        request,
        status=exc.status_code,
        code=code,
        title=detail if exc.status_code != 404 else "Not found",
        detail=detail,
        headers=dict(exc.headers or {}),
    )


# SQLite says "database or disk is full" (SQLITE_FULL); PostgreSQL answers SQLSTATE 53100.
_DATABASE_FULL_TEXT = "database or disk is full"
_DATABASE_FULL_SQLSTATE = "53100"


def storage_full_cause(exc: BaseException) -> BaseException | None:
    """The storage-full error behind ``exc`` (an ENOSPC/EDQUOT anywhere, a full database), if any."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, StorageFullError):
            return current
        if isinstance(current, OSError) and current.errno in STORAGE_FULL_ERRNOS:
            return current
        if _DATABASE_FULL_TEXT in str(current):
            return current
        if getattr(current, "sqlstate", None) == _DATABASE_FULL_SQLSTATE:
            return current
        if getattr(current, "pgcode", None) == _DATABASE_FULL_SQLSTATE:
            return current
        # SQLAlchemy wraps the driver's error in .orig; Python chains in __cause__/__context__.
        orig = getattr(current, "orig", None)
        pending += [current.__cause__, current.__context__, orig if isinstance(orig, BaseException) else None]
    return None


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    cause = storage_full_cause(exc)
    if cause is not None:
        # A full disk is an operator's problem, not a crash: 507 with a stable code, no traceback
        # (and only the error's first line: SQLAlchemy appends the statement and its parameters).
        log.error(
            "request %s: storage full: %s", request_id_of(request), (str(cause).splitlines() or [""])[0]
        )
        full = StorageFullError("No space left on the server's storage; free space and retry")
        return problem_response(
            request, status=full.status, code=full.code, title=full.title, detail=full.detail
        )
    log.exception("request %s crashed", request_id_of(request), exc_info=exc)
    return problem_response(
        request,
        status=500,
        code=TroveError.code,
        title=TroveError.title,
        detail=f"Internal server error (request id {request_id_of(request)})",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(TroveError, _trove_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Database errors by name too: a handler for plain Exception runs in the outermost middleware,
    # which re-raises after answering, and uvicorn then drops the connection (the client's next
    # request on it fails); "database or disk is full" is an ordinary 507.
    app.add_exception_handler(DBAPIError, _unexpected)
    app.add_exception_handler(Exception, _unexpected)
