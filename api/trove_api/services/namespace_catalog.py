"""What the dashboard shows about a workspace's namespaces: search, pages, last activity, usage,
backend state, and the counts and rates of its overview. Reads only: nothing is provisioned,
and a suspended sandbox is never woken to count its files."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from trove_api.events import types
from trove_api.services.auth import Caller
from trove_api.stores.db import Database
from trove_api.stores.tables import api_keys, events, namespaces, webhooks
from trove_core.clock import format_ts, parse_ts
from trove_core.runtime import NamespaceRef, Runtime
from trove_core.wire import LIST_MAX_DEPTH, LIST_MAX_ENTRIES

PAGE_SIZE = 25
PAGE_SIZE_MAX = 100
_USAGE_TIMEOUT_S = 5.0
_COUNTABLE = frozenset({"local", "Ready"})


@dataclass(frozen=True)
class NamespaceRow:
    name: str
    created_at: str
    last_activity: str | None
    files: int | None = None
    bytes: int | None = None
    usage_capped: bool = False
    state: str = ""


@dataclass(frozen=True)
class NamespacePage:
    rows: list[NamespaceRow]
    total: int
    page: int
    pages: int
    per_page: int


@dataclass(frozen=True)
class Overview:
    namespaces: int
    keys: int
    webhooks: int
    events_last_hour: int
    execs_per_minute: list[int]  # the last 60 minutes, oldest first


class NamespaceCatalog:
    def __init__(self, db: Database, runtime: Runtime, uid_base: int) -> None:
        self.db = db
        self.runtime = runtime
        self.uid_base = uid_base

    async def page(
        self, caller: Caller, *, search: str, page: int, per_page: int = PAGE_SIZE
    ) -> NamespacePage:
        """One page of the caller's namespaces (a locked key sees its own only), usage filled in."""
        per_page = min(max(per_page, 1), PAGE_SIZE_MAX)
        found, total = await asyncio.to_thread(self._select, caller, search.strip(), max(page, 1), per_page)
        pages = max(1, -(-total // per_page))
        rows = await asyncio.gather(*(self._with_usage(caller.workspace_id, row) for row in found))
        return NamespacePage(rows=list(rows), total=total, page=max(page, 1), pages=pages, per_page=per_page)

    def _select(
        self, caller: Caller, search: str, page: int, per_page: int
    ) -> tuple[list[tuple[NamespaceRow, int]], int]:
        where = [namespaces.c.workspace_id == caller.workspace_id]
        if caller.namespace is not None:
            where.append(namespaces.c.name == caller.namespace)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(namespaces.c.name.like(f"%{escaped}%", escape="\\"))
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(namespaces).where(*where)).scalar_one()
            listed = conn.execute(
                select(namespaces.c.id, namespaces.c.name, namespaces.c.created_at)
                .where(*where)
                .order_by(namespaces.c.name)
                .limit(per_page)
                .offset((page - 1) * per_page)
            ).all()
            names = [row.name for row in listed]
            last = dict(
                conn.execute(
                    select(events.c.namespace, func.max(events.c.created_at))
                    .where(events.c.workspace_id == caller.workspace_id, events.c.namespace.in_(names))
                    .group_by(events.c.namespace)
                ).all()
            )
        rows = [
            (NamespaceRow(name=row.name, created_at=row.created_at, last_activity=last.get(row.name)), row.id)
            for row in listed
        ]
        return rows, int(total)

    async def _with_usage(self, workspace_id: str, found: tuple[NamespaceRow, int]) -> NamespaceRow:
        row, number = found
        ref = NamespaceRef(workspace_id=workspace_id, name=row.name, uid=self.uid_base + number)
        state = await self.state(ref)
        if state not in _COUNTABLE:  # counting would wake a suspended pod or wait for a pending one
            return NamespaceRow(**{**row.__dict__, "state": state})
        try:
            async with asyncio.timeout(_USAGE_TIMEOUT_S):
                entries, capped = await self.runtime.list_dir(
                    ref, "", recursive=True, max_entries=LIST_MAX_ENTRIES, max_depth=LIST_MAX_DEPTH
                )
        except Exception:  # a namespace that cannot be read now still gets its row
            return NamespaceRow(**{**row.__dict__, "state": state or "unreachable"})
        files = [e for e in entries if not e.is_dir]
        return NamespaceRow(
            **{
                **row.__dict__,
                "files": len(files),
                "bytes": sum(e.size for e in files),
                "usage_capped": capped,
                "state": state,
            }
        )

    async def state(self, ref: NamespaceRef) -> str:
        """The backend's word on the sandbox (Kubernetes: the TroveNamespace phase); "" if none."""
        describe = getattr(self.runtime, "sandbox_state", None)
        if describe is None:
            return "local"
        try:
            return str(await describe(ref))
        except Exception:
            return "unknown"

    async def overview(self, workspace_id: str) -> Overview:
        return await asyncio.to_thread(self._overview, workspace_id)

    def _overview(self, workspace_id: str) -> Overview:
        now = datetime.now(UTC)
        hour_ago = format_ts(now - timedelta(minutes=60))
        with self.db.read() as conn:

            def count(table: Any, *where: Any) -> int:
                return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())

            spaces = count(namespaces, namespaces.c.workspace_id == workspace_id)
            keys = count(api_keys, api_keys.c.workspace_id == workspace_id, api_keys.c.revoked_at.is_(None))
            hooks = count(webhooks, webhooks.c.workspace_id == workspace_id, webhooks.c.deleted_at.is_(None))
            recent = conn.execute(
                select(events.c.type, events.c.created_at).where(
                    events.c.workspace_id == workspace_id, events.c.created_at > hour_ago
                )
            ).all()
        per_minute = [0] * 60
        for row in recent:
            if row.type == types.EXEC_COMPLETED:
                age = int((now - parse_ts(row.created_at)).total_seconds() // 60)
                if 0 <= age < 60:
                    per_minute[59 - age] += 1
        return Overview(
            namespaces=spaces,
            keys=keys,
            webhooks=hooks,
            events_last_hour=len(recent),
            execs_per_minute=per_minute,
        )
