"""E2B's control-plane routes (``E2B_API_URL={base}/e2b``), answered in E2B's JSON shapes."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from trove_api.e2b.access import traffic_token
from trove_api.e2b.egress import EgressRuleError
from trove_api.e2b.records import SandboxRecord
from trove_api.e2b.request_checks import E2bApiError
from trove_api.e2b.sandboxes import CLIENT_ID, ENVD_VERSION, SandboxService
from trove_api.services.auth import Caller, authenticate, require_filesystem
from trove_core.errors import TroveError
from trove_core.runtime import SandboxSize

router = APIRouter(prefix="/e2b", include_in_schema=False)
Handler = Callable[..., Awaitable[Response]]


def e2b_errors(handler: Handler) -> Handler:
    """Trove's errors in E2B's body (``{"code", "message"}``): the SDK maps those to its exceptions."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except E2bApiError as exc:
            return JSONResponse({"code": exc.status, "message": exc.message}, status_code=exc.status)
        except EgressRuleError as exc:  # a network rule Trove cannot enforce
            return JSONResponse({"code": 400, "message": str(exc)}, status_code=400)
        except TroveError as exc:
            return JSONResponse({"code": exc.status, "message": str(exc)}, status_code=exc.status)

    return wrapped


def service(request: Request) -> SandboxService:
    svc: SandboxService = request.app.state.e2b
    return svc


async def caller_of(request: Request) -> Caller:
    """``X-API-KEY`` is a Trove workspace key; an admin key gets 403 as on the filesystem."""
    key = request.headers.get("x-api-key", "")
    caller = await authenticate(request.app.state.ctx.db, f"Bearer {key}" if key else None)
    require_filesystem(caller)
    return caller


async def body_of(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise E2bApiError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise E2bApiError(400, "the body must be a JSON object")
    return body


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def sandbox_body(rec: SandboxRecord) -> dict[str, Any]:
    """E2B's ``Sandbox``: what create, connect and fork answer."""
    return {
        "templateID": rec.template_id,
        "sandboxID": rec.sandbox_id,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": rec.access_token,
        # E2B's header for a sandbox's other ports (get_host); Trove's ports are never public.
        "trafficAccessToken": traffic_token(rec),
    }


def created(rec: SandboxRecord, status: int = 201) -> JSONResponse:
    return JSONResponse(sandbox_body(rec), status_code=status)


def listed(rec: SandboxRecord, size: SandboxSize) -> dict[str, Any]:
    return {
        "templateID": rec.template_id,
        "sandboxID": rec.sandbox_id,
        "clientID": CLIENT_ID,
        "startedAt": _iso(rec.started_at),
        "endAt": _iso(rec.end_at),
        # Every sandbox of a runtime is given the same (its settings), whether it runs or not.
        "cpuCount": size.cpu_count,
        "memoryMB": size.memory_mb,
        "diskSizeMB": 0,
        "state": rec.state,
        "envdVersion": ENVD_VERSION,
        "metadata": rec.metadata,
    }


@router.post("/sandboxes")
@router.post("/v2/sandboxes")
@e2b_errors
async def create_sandbox(request: Request) -> Response:
    caller = await caller_of(request)
    return created(await service(request).create(caller, await body_of(request)))


@router.post("/sandboxes/{sandbox_id}/connect")
@router.post("/v2/sandboxes/{sandbox_id}/connect")
@router.post("/sandboxes/{sandbox_id}/resume")
@e2b_errors
async def connect_sandbox(request: Request, sandbox_id: str) -> Response:
    caller = await caller_of(request)
    rec = await service(request).connect(caller, sandbox_id, await body_of(request))
    return created(rec, 200 if request.url.path.endswith("/connect") else 201)


@router.get("/sandboxes/{sandbox_id}")
@e2b_errors
async def get_sandbox(request: Request, sandbox_id: str) -> Response:
    svc = service(request)
    rec = await svc.get(await caller_of(request), sandbox_id)
    detail = listed(rec, svc.ctx.runtime.sandbox_size()) | {
        "envdAccessToken": rec.access_token,
        "allowInternetAccess": rec.allow_internet_access,
        "network": rec.egress.as_json(),
    }
    return JSONResponse(detail)


@router.get("/sandboxes")
@router.get("/v2/sandboxes")
@e2b_errors
async def list_sandboxes(request: Request) -> Response:
    caller = await caller_of(request)
    params = request.query_params
    records = await service(request).listing(caller)
    wanted_meta = dict(parse_qsl(params.get("metadata", "")))
    wanted_meta = {unquote(k): unquote(v) for k, v in wanted_meta.items()}
    states = {s for raw in params.getlist("state") for s in raw.split(",") if s} or {"running", "paused"}
    templates = {t for raw in params.getlist("template") for t in raw.split(",") if t}
    records = [
        r
        for r in records
        if r.state in states
        and all(r.metadata.get(k) == v for k, v in wanted_meta.items())
        and (not templates or r.template_id in templates)
    ]
    if params.get("order") == "desc":
        records.reverse()
    start = 0
    token = params.get("nextToken")
    if token:
        if not token.isdigit():
            raise E2bApiError(400, "nextToken is not one this server gave")
        start = int(token)
    raw_limit = params.get("limit") or "100"
    limit = int(raw_limit) if raw_limit.isdigit() else 0
    if not 1 <= limit <= 1000:
        raise E2bApiError(400, "limit must be between 1 and 1000")
    page = records[start : start + limit]
    headers = {"x-next-token": str(start + limit)} if start + limit < len(records) else {}
    size = service(request).ctx.runtime.sandbox_size()
    return JSONResponse([listed(r, size) for r in page], headers=headers)


@router.post("/sandboxes/{sandbox_id}/timeout")
@e2b_errors
async def set_timeout(request: Request, sandbox_id: str) -> Response:
    body = await body_of(request)
    await service(request).set_timeout(await caller_of(request), sandbox_id, body.get("timeout"))
    return Response(status_code=204)


@router.put("/sandboxes/{sandbox_id}/network")
@e2b_errors
async def update_network(request: Request, sandbox_id: str) -> Response:
    body = await body_of(request)
    await service(request).update_network(await caller_of(request), sandbox_id, body)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/pause")
@e2b_errors
async def pause_sandbox(request: Request, sandbox_id: str) -> Response:
    await service(request).pause(await caller_of(request), sandbox_id)
    return Response(status_code=204)


@router.delete("/sandboxes/{sandbox_id}")
@e2b_errors
async def kill_sandbox(request: Request, sandbox_id: str) -> Response:
    await service(request).kill(await caller_of(request), sandbox_id)
    return Response(status_code=204)


@router.get("/sandboxes/{sandbox_id}/metrics")
@e2b_errors
async def sandbox_metrics(request: Request, sandbox_id: str) -> Response:
    caller = await caller_of(request)
    svc = service(request)
    rec = await svc.get(caller, sandbox_id)
    if rec.state != "running":
        # E2B has no figures for a sandbox that is not running; asking the runtime would wake it.
        return JSONResponse([])
    figures, cpu_pct = await svc.usage(caller, rec.sandbox_id)
    entries, _ = await svc.ctx.files.list(
        caller, rec.sandbox_id, "workspace/", recursive=True, max_entries=100_000, max_depth=64
    )
    now = datetime.now(UTC)
    metric = {
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "timestampUnix": int(now.timestamp()),
        # What the sandbox is given, as list/get_info say (in a pod the agent counts the node's).
        "cpuCount": svc.ctx.runtime.sandbox_size().cpu_count,
        "cpuUsedPct": cpu_pct,
        "memUsed": figures.mem_used,
        "memTotal": figures.mem_total,
        "memCache": figures.mem_cache,
        "diskUsed": sum(e.size for e in entries if not e.is_dir),
        # Trove's disk quota is a server setting, not reported per sandbox (0: not reported).
        "diskTotal": 0,
    }
    return JSONResponse([metric])


@router.post("/sandboxes/{sandbox_id}/fork")
@e2b_errors
async def fork_sandbox(request: Request, sandbox_id: str) -> Response:
    body = await body_of(request)
    forks = await service(request).fork(await caller_of(request), sandbox_id, body)
    return JSONResponse([{"sandbox": sandbox_body(f)} for f in forks], status_code=201)


@router.post("/sandboxes/{sandbox_id}/snapshots")
@e2b_errors
async def create_snapshot(request: Request, sandbox_id: str) -> Response:
    body = await body_of(request)
    name = body.get("name")
    snapshot_id = await service(request).create_snapshot(
        await caller_of(request), sandbox_id, name if isinstance(name, str) else None
    )
    return JSONResponse({"snapshotID": snapshot_id, "names": [name] if name else []}, status_code=201)


@router.get("/snapshots")
@e2b_errors
async def list_snapshots(request: Request) -> Response:
    params = request.query_params
    found = await service(request).list_snapshots(await caller_of(request), params.get("sandboxID"))
    if params.get("name"):
        found = [(i, label) for i, label in found if label == params.get("name")]
    return JSONResponse([{"snapshotID": i, "names": [label] if label else []} for i, label in found])


@router.delete("/templates/{template_id}")
@e2b_errors
async def delete_snapshot(request: Request, template_id: str) -> Response:
    deleted = await service(request).delete_snapshot(await caller_of(request), template_id)
    if not deleted:
        raise E2bApiError(404, f"template {template_id[:140]!r} not found")
    return Response(status_code=204)
