"""Dashboard sign-in and sign-out, and its static assets."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from trove_api.dashboard.render import SECURITY_HEADERS, STATIC_DIR, render
from trove_api.deps import ContextDep
from trove_api.routers.dashboard.common import (
    COOKIE,
    CSRF_FIELD,
    DashboardRoute,
    PostedDep,
    back,
    current_session,
    read_form,
)
from trove_api.services.dashboard_sessions import same
from trove_core.errors import CsrfRejectedError, NotFoundError, TroveError

router = APIRouter(prefix="/dashboard", route_class=DashboardRoute, include_in_schema=False)

LOGIN_CSRF_COOKIE = "trove_login_csrf"
# Assets by name, fixed at start: a request can only ever name one of these files.
_STATIC = {
    str(path.relative_to(STATIC_DIR)): path
    for path in STATIC_DIR.rglob("*")
    if path.is_file() and path.suffix in {".js", ".css", ".svg"}
}
_MEDIA = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def safe_next(target: str | None) -> str:
    """Only our own pages: an open redirect would make the sign-in page a phishing tool."""
    if target and target.startswith(("/dashboard", "/cli")) and "//" not in target and "\\" not in target:
        return target
    return "/dashboard"


def is_tls(request: Request) -> bool:
    # uvicorn applies X-Forwarded-Proto from TROVE_FORWARDED_ALLOW_IPS proxies to the scheme.
    return request.url.scheme == "https"


@router.get("/static/{name:path}")
async def static(name: str) -> Response:
    path = _STATIC.get(name)
    if path is None:
        raise NotFoundError(f"No such asset: {name[:100]}")
    return FileResponse(
        path,
        media_type=_MEDIA[path.suffix],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/login")
async def login_page(
    request: Request, ctx: ContextDep, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    if await current_session(request, ctx) is not None:
        return back(safe_next(next))
    return _login_form(request, safe_next(next))


def _login_form(
    request: Request, target: str, *, error: str | None = None, status: int = 200
) -> HTMLResponse:
    # Sign-in CSRF (double submit): a token in a cookie and in the form, so another site
    # cannot sign a browser in under its own key.
    token = secrets.token_urlsafe(24)
    html = render("login.html", session=None, nav=None, csrf=token, next=target, error=error)
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=is_tls(request),
        path="/dashboard/login",
        max_age=3600,
    )
    return response


@router.post("/login")
async def sign_in(request: Request, ctx: ContextDep) -> Response:
    form = await read_form(request)
    target = safe_next(form.get("next"))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not same(form.get(CSRF_FIELD, ""), expected):
        raise CsrfRejectedError("The sign-in form's CSRF token is missing or wrong: reload the page")
    client = request.client.host if request.client else "unknown"
    try:
        signed = await ctx.dashboard_sessions.sign_in(form.get("api_key", ""), client)
    except TroveError as exc:
        refused = _login_form(request, target, error=exc.detail, status=exc.status)
        if exc.retry_after is not None:
            refused.headers["Retry-After"] = str(exc.retry_after)
        return refused
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        signed.cookie,
        httponly=True,
        samesite="strict",
        secure=is_tls(request),
        path="/",  # the device-login page /cli uses this sign-in too
        max_age=ctx.dashboard_sessions.ttl_s,
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/dashboard/login")
    return response


@router.post("/logout")
async def sign_out(posted: PostedDep) -> Response:
    await posted.view.ctx.dashboard_sessions.sign_out(posted.view.session)
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
