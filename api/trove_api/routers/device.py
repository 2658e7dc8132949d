"""CLI login: POST /v1/auth/device/start|poll (no auth), approve/deny (admin), the /cli page."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from trove_api import device_page
from trove_api.deps import CallerDep, ContextDep
from trove_api.routers.dashboard.common import current_session
from trove_api.schemas.common import problems
from trove_api.schemas.device import (
    DeviceApproved,
    DeviceDecision,
    DeviceDenied,
    DevicePoll,
    DevicePollRequest,
    DeviceStart,
)
from trove_api.services.auth import Caller, authenticate
from trove_api.services.dashboard_sessions import Session
from trove_core.errors import CsrfRejectedError, TroveError, UnauthenticatedError

router = APIRouter(tags=["device login"])


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _base_url(request: Request, ctx: ContextDep) -> str:
    return (ctx.settings.public_base_url or str(request.base_url)).rstrip("/")


@router.post("/v1/auth/device/start", response_model=DeviceStart, responses=problems(429))
async def start_device_login(request: Request, ctx: ContextDep) -> DeviceStart:
    """Start a browser login for the CLI (no auth, no body). Rate limited per client address."""
    ctx.device_start_limit.hit(_client(request), what="login attempts")
    started = await ctx.device_login.start(_client(request))
    page = f"{_base_url(request, ctx)}/cli"
    return DeviceStart(
        device_code=started.device_code,
        user_code=started.user_code,
        verification_uri=page,
        verification_uri_complete=f"{page}?code={quote(started.user_code)}",
        interval=started.interval,
        expires_in=started.expires_in,
    )


@router.post("/v1/auth/device/poll", response_model=DevicePoll, response_model_exclude_none=True)
async def poll_device_login(body: DevicePollRequest, ctx: ContextDep) -> DevicePoll:
    """200 with a status for every state; the key comes in exactly one `approved` answer. Never limited."""
    answer = await ctx.device_login.poll(body.device_code)
    return DevicePoll.model_validate(answer)


@router.post("/v1/auth/device/approve", response_model=DeviceApproved, responses=problems(400, 401, 403, 429))
async def approve_device_login(
    request: Request, body: DeviceDecision, caller: CallerDep, ctx: ContextDep
) -> DeviceApproved:
    """Approve a waiting login (admin key): the CLI's next poll gets a new workspace key.

    The key is locked to `namespace`, by default to the server's default namespace; set
    `all_namespaces` for an unlocked key.
    """
    ctx.device_form_limit.hit(_client(request), what="approval attempts")
    approval = await ctx.device_login.approve(
        caller,
        body.user_code,
        namespace=body.namespace,
        name=body.name,
        all_namespaces=body.all_namespaces,
    )
    return DeviceApproved(
        status="approved",
        key_id=approval.key_id,
        workspace_id=approval.workspace_id,
        namespace=approval.namespace,
    )


@router.post("/v1/auth/device/deny", response_model=DeviceDenied, responses=problems(400, 401, 403, 429))
async def deny_device_login(
    request: Request, body: DeviceDecision, caller: CallerDep, ctx: ContextDep
) -> DeviceDenied:
    """Deny a waiting login (admin key); the CLI's next poll says `denied`."""
    ctx.device_form_limit.hit(_client(request), what="approval attempts")
    await ctx.device_login.deny(caller, body.user_code)
    return DeviceDenied(status="denied")


@router.get("/cli", response_class=HTMLResponse, include_in_schema=False)
async def approval_page(
    request: Request, ctx: ContextDep, code: Annotated[str, Query(max_length=32)] = ""
) -> HTMLResponse:
    """The page `verification_uri_complete` points at: confirm the code, then approve with the
    dashboard sign-in (an admin session) or a pasted admin key."""
    session = await current_session(request, ctx)
    return HTMLResponse(await _form(ctx, code, session=session), headers=device_page.SECURITY_HEADERS)


async def _form(ctx: ContextDep, code: str, error: str | None = None, session: Session | None = None) -> str:
    waiting = await ctx.device_login.waiting(code) if code else None
    admin = session is not None and session.caller.is_admin
    return device_page.approval_form(
        code,
        error=error,
        waiting=waiting,
        default_namespace=ctx.device_login.default_namespace,
        signed_in_as=session.caller.key_name if admin and session else None,
        csrf=session.csrf_token if admin and session else None,
    )


async def _approver(request: Request, ctx: ContextDep, fields: dict[str, str]) -> Caller:
    """A pasted key is its own credential (no cookie involved, so no CSRF); without one, the
    dashboard session approves, and only with its CSRF token."""
    pasted = fields.get("api_key", "").strip()
    if pasted:
        return await authenticate(ctx.db, f"Bearer {pasted}")
    session = await current_session(request, ctx)
    if session is None:
        raise UnauthenticatedError("Paste an admin key, or sign in to the dashboard first")
    if not ctx.dashboard_sessions.check_csrf(session, fields.get("csrf")):
        raise CsrfRejectedError("The form's CSRF token is missing or does not match this sign-in")
    return session.caller


@router.post("/cli", response_class=HTMLResponse, include_in_schema=False)
async def submit_approval(request: Request, ctx: ContextDep) -> HTMLResponse:
    """The form's target: approve or deny with the pasted admin key (rate limited per client)."""
    fields = device_page.read_form(await request.body())
    code = fields.get("user_code", "")[:32]
    try:
        ctx.device_form_limit.hit(_client(request), what="approval attempts")
        caller = await _approver(request, ctx, fields)
        if fields.get("action") == "deny":
            await ctx.device_login.deny(caller, code)
            html = device_page.denied(code)
        else:
            approval = await ctx.device_login.approve(
                caller,
                code,
                namespace=fields.get("namespace"),
                name=fields.get("name"),
                all_namespaces=fields.get("all_namespaces") == "on",
            )
            html = device_page.approved(code, approval.workspace_id, approval.namespace)
    except TroveError as exc:
        headers = dict(device_page.SECURITY_HEADERS)
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        session = await current_session(request, ctx)
        return HTMLResponse(await _form(ctx, code, exc.detail, session), exc.status, headers=headers)
    return HTMLResponse(html, headers=device_page.SECURITY_HEADERS)
