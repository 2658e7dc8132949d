"""What every E2B control-plane request goes through before ``SandboxService`` acts on it: the
sandbox the caller may reach and its record, a checked timeout, the record a new sandbox starts
with (from E2B's create body), and refusals in E2B's own error shape.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from trove_api.context import AppContext
from trove_api.e2b.egress import ALL_IPV4, rules_from
from trove_api.e2b.records import SandboxRecord, SandboxRecords
from trove_api.services.auth import Caller
from trove_core.errors import NamespaceForbiddenError
from trove_core.settings import Settings

MAP_MAX_ENTRIES = 100
MAP_MAX_CHARS = 16_384


class E2bApiError(Exception):
    """An answer in E2B's own error shape ``{"code", "message"}``, so the SDK raises its exceptions."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(sandbox_id: str) -> E2bApiError:
    return E2bApiError(404, f"sandbox {sandbox_id[:140]!r} not found")


class RequestChecks:
    """The checks ``SandboxService`` inherits; it gives ``ctx``, ``records`` and ``settings``."""

    ctx: AppContext
    records: SandboxRecords
    settings: Settings

    def _timeout(self, value: Any) -> int:
        timeout = self.settings.e2b_default_timeout_s if value is None else value
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
            raise E2bApiError(400, "timeout must be a whole number of seconds")
        if timeout > self.settings.e2b_max_timeout_s:
            raise E2bApiError(
                400, f"timeout is {timeout} s; the limit is {self.settings.e2b_max_timeout_s} s"
            )
        return timeout

    @staticmethod
    def reach(caller: Caller, sandbox_id: str) -> None:
        if caller.namespace is not None and caller.namespace != sandbox_id:
            raise NamespaceForbiddenError(
                f"This key is locked to sandbox {caller.namespace!r}; it cannot reach {sandbox_id[:140]!r}"
            )

    async def get(self, caller: Caller, sandbox_id: str) -> SandboxRecord:
        self.reach(caller, sandbox_id)
        rec = await asyncio.to_thread(self.records.get, caller.workspace_id, sandbox_id)
        if rec is None or rec.state == "killed":
            raise not_found(sandbox_id)
        return rec

    def _new_record(
        self, caller: Caller, sandbox_id: str, template: str, body: dict[str, Any]
    ) -> SandboxRecord:
        now = time.time()
        lifecycle = body.get("autoPause")
        egress = rules_from(body.get("network") or {}, body.get("allow_internet_access"))
        return SandboxRecord(
            sandbox_id=sandbox_id,
            workspace_id=caller.workspace_id,
            template_id=template,
            state="running",
            metadata=_string_map(body.get("metadata"), "metadata"),
            envs=_string_map(body.get("envVars"), "envVars"),
            allow_internet_access=ALL_IPV4 not in egress.deny_out,
            auto_pause=bool(lifecycle),
            owned=True,
            access_token=secrets.token_urlsafe(32),
            key_id=caller.key_id,
            key_name=caller.key_name,
            started_at=now,
            end_at=now + self._timeout(body.get("timeout")),
            egress=egress,
        )


def _string_map(value: Any, name: str) -> dict[str, str]:
    """E2B's metadata and envs: string to string, bounded (they live in a database row)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise E2bApiError(400, f"{name} must be an object of strings")
    if len(value) > MAP_MAX_ENTRIES or sum(len(k) + len(v) for k, v in value.items()) > MAP_MAX_CHARS:
        raise E2bApiError(400, f"{name}: at most {MAP_MAX_ENTRIES} entries and {MAP_MAX_CHARS} characters")
    return dict(value)
