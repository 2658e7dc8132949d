"""POST /v1/exec (JSON) and the legacy text POST /exec."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from trove_api.deps import ContextDep, FsCallDep
from trove_api.schemas.common import problems
from trove_api.schemas.exec import ExecRequest, ExecResult
from trove_api.services.exec import legacy_text
from trove_core.errors import ExecTimeoutError

router = APIRouter(tags=["exec"])
_ERRORS = problems(400, 401, 403, 408, 413, 422)


@router.post("/v1/exec", response_model=ExecResult, responses=_ERRORS)
async def run_command(body: ExecRequest, call: FsCallDep, ctx: ContextDep) -> ExecResult:
    """Run a command in a fresh sandboxed bash; a non-zero exit is still a 200.

    A command still running after the wall clock (30 s by default) is killed with its whole
    process tree and the call answers 408 with the partial `stdout`/`stderr`.
    """
    try:
        result = await ctx.execs.run(call.caller, call.namespace, body.command, body.stdin)
    except ExecTimeoutError:
        ctx.metrics.execs.labels("timeout").inc()
        raise
    ctx.metrics.execs.labels("ok" if result.exit_code == 0 else "nonzero").inc()
    ctx.metrics.exec_latency.observe(result.duration_ms / 1000)
    return ExecResult(
        exit_code=result.exit_code,
        stdout=result.stdout,
        stderr=result.stderr,
        duration_ms=result.duration_ms,
        truncated=result.truncated,
    )


@router.post(
    "/exec",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}, **_ERRORS},
)
async def run_command_legacy(body: ExecRequest, call: FsCallDep, ctx: ContextDep) -> PlainTextResponse:
    """Legacy text exec: stdout, or on a non-zero exit a first line `[exit N]` then stdout and stderr."""
    result = await ctx.execs.run(call.caller, call.namespace, body.command, body.stdin)
    return PlainTextResponse(legacy_text(result))
