"""Who an in-sandbox call is: the sandbox it names (``E2b-Sandbox-Id``) and its envd token."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping

from trove_api.e2b.records import SandboxRecord, SandboxRecords
from trove_api.e2b.sandboxes import E2bApiError, owner_caller
from trove_api.services.auth import Caller, key_is_active

SANDBOX_HEADER = "e2b-sandbox-id"
PORT_HEADER = "e2b-sandbox-port"
TOKEN_HEADER = "x-access-token"  # noqa: S105 (a header name, not a secret)
ENVD_PORT = "49983"


async def sandbox_caller(records: SandboxRecords, headers: Mapping[str, str]) -> tuple[SandboxRecord, Caller]:
    """The sandbox and the caller in-sandbox calls act as; E2B's statuses when that fails.

    502 is what E2B's proxy answers for a sandbox that is not running (the SDK's
    ``is_running`` reads it as False); 401 a missing or wrong access token.
    """
    sandbox_id = headers.get(SANDBOX_HEADER, "")
    port = headers.get(PORT_HEADER, ENVD_PORT)
    if port != ENVD_PORT:
        raise E2bApiError(501, f"port {port[:8]!r}: Trove does not proxy sandbox ports yet (get_host)")
    rec = await asyncio.to_thread(records.by_id, sandbox_id) if sandbox_id else None
    if rec is None or rec.state != "running":
        raise E2bApiError(502, f"sandbox {sandbox_id[:140]!r} is not running")
    token = headers.get(TOKEN_HEADER, "")
    if not token or not hmac.compare_digest(token.encode(), rec.access_token.encode()):
        raise E2bApiError(401, "missing or wrong X-Access-Token for this sandbox")
    # The key that made the sandbox may have been revoked since: its sandbox goes with it.
    if not await asyncio.to_thread(key_is_active, records.db, rec.key_id):
        raise E2bApiError(401, "the API key that created this sandbox has been revoked")
    return rec, owner_caller(rec)
