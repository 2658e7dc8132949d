"""Who an in-sandbox call is: the sandbox it names (``E2b-Sandbox-Id``) and its envd token.

A call to another port of the sandbox (``get_host``) may also show E2B's traffic token or a
workspace key (``X-API-KEY``, a locked key only for its own sandbox): see ``port_sandbox``.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping

from trove_api.e2b.records import SandboxRecord, SandboxRecords
from trove_api.e2b.request_checks import E2bApiError
from trove_api.e2b.sandboxes import SandboxService, owner_caller
from trove_api.services.auth import Caller, authenticate, require_filesystem

SANDBOX_HEADER = "e2b-sandbox-id"
PORT_HEADER = "e2b-sandbox-port"
TOKEN_HEADER = "x-access-token"  # noqa: S105 (a header name, not a secret)
TRAFFIC_HEADER = "e2b-traffic-access-token"
KEY_HEADER = "x-api-key"
ENVD_PORT = "49983"
# What a sandbox's own server must never see: the credentials that opened the way to it.
CREDENTIAL_HEADERS = frozenset((TOKEN_HEADER, TRAFFIC_HEADER, KEY_HEADER, "authorization"))
REVOKED = "the API key that created this sandbox has been revoked"


def traffic_token(rec: SandboxRecord) -> str:
    """E2B's ``trafficAccessToken``: opens the sandbox's ports, not envd (files, commands).

    Derived from the envd token, so it needs no column of its own and cannot be turned back
    into the envd token.
    """
    return hmac.new(rec.access_token.encode(), b"trove-e2b-traffic", "sha256").hexdigest()


def target_port(headers: Mapping[str, str]) -> int | None:
    """The port an in-sandbox call is for, when it is not envd's; None for envd."""
    port = headers.get(PORT_HEADER, ENVD_PORT)
    if port == ENVD_PORT:
        return None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise E2bApiError(400, f"E2b-Sandbox-Port {port[:8]!r} is not a port")
    return int(port)


async def sandbox_caller(records: SandboxRecords, headers: Mapping[str, str]) -> tuple[SandboxRecord, Caller]:
    """The sandbox and the caller in-sandbox calls act as; E2B's statuses when that fails.

    502 is what E2B's proxy answers for a sandbox that is not running (the SDK's
    ``is_running`` reads it as False); 401 a missing or wrong access token.
    """
    rec, key_active = await _running(records, headers)
    token = headers.get(TOKEN_HEADER, "")
    if not token or not hmac.compare_digest(token.encode(), rec.access_token.encode()):
        raise E2bApiError(401, "missing or wrong X-Access-Token for this sandbox")
    return _owned_by_live_key(rec, key_active)


async def port_sandbox(svc: SandboxService, headers: Mapping[str, str]) -> SandboxRecord:
    """The sandbox a call to one of its ports may reach: by workspace key, traffic or envd token."""
    key = headers.get(KEY_HEADER, "")
    if key:
        caller = await authenticate(svc.ctx.db, f"Bearer {key}")
        require_filesystem(caller)
        rec = await svc.get(caller, headers.get(SANDBOX_HEADER, ""))  # another workspace's: 404
        if rec.state != "running":
            raise E2bApiError(502, f"sandbox {rec.sandbox_id!r} is not running")
        return rec
    traffic = headers.get(TRAFFIC_HEADER, "")
    if not traffic:
        return (await sandbox_caller(svc.records, headers))[0]
    rec, key_active = await _running(svc.records, headers)
    if not hmac.compare_digest(traffic.encode(), traffic_token(rec).encode()):
        raise E2bApiError(401, "wrong E2b-Traffic-Access-Token for this sandbox")
    return _owned_by_live_key(rec, key_active)[0]


async def _running(records: SandboxRecords, headers: Mapping[str, str]) -> tuple[SandboxRecord, bool]:
    """The running sandbox named in the headers and whether its key is still active, in one
    query (every command, file and port call comes here); 502 when it is not running."""
    sandbox_id = headers.get(SANDBOX_HEADER, "")
    rec, key_active = (
        await asyncio.to_thread(records.by_id_with_key, sandbox_id) if sandbox_id else (None, False)
    )
    if rec is None or rec.state != "running":
        raise E2bApiError(502, f"sandbox {sandbox_id[:140]!r} is not running")
    return rec, key_active


def _owned_by_live_key(rec: SandboxRecord, key_active: bool) -> tuple[SandboxRecord, Caller]:
    # The key that made the sandbox may have been revoked since: its sandbox goes with it.
    if not key_active:
        raise E2bApiError(401, REVOKED)
    return rec, owner_caller(rec)
