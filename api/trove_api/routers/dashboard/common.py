"""What every dashboard route shares: the signed-in session (cookie → caller), CSRF checks,
posted forms, and errors answered as HTML pages instead of problem+json."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from trove_api.context import AppContext
from trove_api.dashboard.render import SECURITY_HEADERS, render
from trove_api.deps import ContextDep
from trove_api.problems import request_id_of
from trove_api.services.auth import Caller, require_admin
from trove_api.services.dashboard_sessions import Session
from trove_core.errors import CsrfRejectedError, PayloadTooLargeError, TroveError, UnauthenticatedError

log = logging.getLogger("trove.dashboard")

COOKIE = "trove_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
FORM_MAX_BYTES = 256 * 1024  # init.sh and agent.md are edited in a textarea


class SignInRequired(Exception):
    """No live session: the browser goes to the sign-in page and comes back after."""


class DashboardRoute(APIRoute):
    """Errors become HTML pages (with the problem's status and code), a missing session a
    redirect to the sign-in page; JSON problem bodies are for API clients."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.method != "GET" or request.headers.get("hx-request"):
                    target = "/dashboard"
                response = RedirectResponse(f"/dashboard/login?next={quote(target)}", status_code=303)
                response.delete_cookie(COOKIE, path="/")
                return response
            except TroveError as exc:
                return error_page(request, exc)

        return answer


def error_page(request: Request, exc: TroveError) -> HTMLResponse:
    """The problem as a page: the same status, code, detail and logging as problem+json."""
    headers = dict(SECURITY_HEADERS)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    detail = exc.detail
    if exc.internal:
        detail = f"{exc.detail} (request id {request_id_of(request)}; the server log has the details)"
    if exc.status >= 500 or exc.internal:
        log.error("request %s failed: %s", request_id_of(request), exc.internal or exc.detail)
    session = getattr(request.state, "dashboard_session", None)
    html = render("error.html", error=exc, detail=detail, session=session, nav=None)
    return HTMLResponse(html, status_code=exc.status, headers=headers)


@dataclass(frozen=True)
class View:
    """One request's view of the dashboard: who is signed in, and the app's services."""

    request: Request
    ctx: AppContext
    session: Session

    @property
    def caller(self) -> Caller:
        return self.session.caller

    def page(
        self, template: str, *, status: int = 200, nav: str | None = None, **values: Any
    ) -> HTMLResponse:
        html = render(template, session=self.session, nav=nav, request=self.request, **values)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


async def current_session(request: Request, ctx: AppContext) -> Session | None:
    """The request's live session, or None (no cookie, bad signature, expired, key revoked)."""
    try:
        session = await ctx.dashboard_sessions.resolve(request.cookies.get(COOKIE))
    except UnauthenticatedError:
        return None
    request.state.dashboard_session = session
    return session


async def get_view(request: Request, ctx: ContextDep) -> View:
    session = await current_session(request, ctx)
    if session is None:
        raise SignInRequired
    return View(request=request, ctx=ctx, session=session)


ViewDep = Annotated[View, Depends(get_view)]


async def get_admin_view(view: ViewDep) -> View:
    require_admin(view.caller)
    return view


AdminViewDep = Annotated[View, Depends(get_admin_view)]


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each), at most ``FORM_MAX_BYTES``."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > FORM_MAX_BYTES:
            raise PayloadTooLargeError(f"Forms may be at most {FORM_MAX_BYTES} bytes")
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def check_csrf(view: View, token: str | None) -> None:
    if not view.ctx.dashboard_sessions.check_csrf(view.session, token):
        raise CsrfRejectedError("The form's CSRF token is missing or does not match this sign-in")


@dataclass(frozen=True)
class Posted:
    view: View
    form: dict[str, str]

    @property
    def caller(self) -> Caller:
        return self.view.caller


async def get_posted(view: ViewDep) -> Posted:
    """A posted form whose CSRF token matches the session (a header serves htmx and uploads)."""
    form = await read_form(view.request)
    check_csrf(view, form.get(CSRF_FIELD) or view.request.headers.get(CSRF_HEADER))
    return Posted(view=view, form=form)


PostedDep = Annotated[Posted, Depends(get_posted)]


async def get_admin_posted(posted: PostedDep) -> Posted:
    require_admin(posted.caller)
    return posted


AdminPostedDep = Annotated[Posted, Depends(get_admin_posted)]


def back(url: str) -> RedirectResponse:
    """After a change, the page again (post/redirect/get: a reload repeats nothing)."""
    return RedirectResponse(url, status_code=303)
