"""The ``e2b_sandboxes`` rows: which namespaces E2B made, their state, timeout and envd token."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update

from trove_api.e2b.egress import EgressRules
from trove_api.stores.db import Database
from trove_api.stores.tables import api_keys, e2b_sandboxes, namespaces, snapshots


@dataclass(frozen=True)
class SandboxRecord:
    sandbox_id: str
    workspace_id: str
    template_id: str
    state: str  # running | paused | killed (kept so the id never names a sandbox again)
    metadata: dict[str, str]
    envs: dict[str, str]
    allow_internet_access: bool
    auto_pause: bool
    owned: bool
    access_token: str
    key_id: str
    key_name: str
    started_at: float
    end_at: float
    egress: EgressRules = field(default_factory=EgressRules)


def _from_row(row: Any) -> SandboxRecord:
    return SandboxRecord(
        sandbox_id=row["sandbox_id"],
        workspace_id=row["workspace_id"],
        template_id=row["template_id"],
        state=row["state"],
        metadata=json.loads(row["metadata_json"]),
        envs=json.loads(row["envs_json"]),
        allow_internet_access=bool(row["allow_internet_access"]),
        auto_pause=bool(row["auto_pause"]),
        owned=bool(row["owned"]),
        access_token=row["access_token"],
        key_id=row["key_id"],
        key_name=row["key_name"],
        started_at=row["started_at"],
        end_at=row["end_at"],
        egress=_egress(row["egress_json"]),
    )


def egress_json(rules: EgressRules) -> str:
    return json.dumps(rules.as_json()) if rules.allow_out or rules.deny_out else "{}"


def _egress(raw: str) -> EgressRules:
    stored = json.loads(raw or "{}")
    return EgressRules(tuple(stored.get("allowOut", ())), tuple(stored.get("denyOut", ())))


class SandboxRecords:
    """Blocking database calls; the service runs them in threads."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, rec: SandboxRecord) -> None:
        with self.db.write() as conn:
            conn.execute(
                e2b_sandboxes.insert().values(
                    sandbox_id=rec.sandbox_id,
                    workspace_id=rec.workspace_id,
                    template_id=rec.template_id,
                    state=rec.state,
                    metadata_json=json.dumps(rec.metadata),
                    envs_json=json.dumps(rec.envs),
                    allow_internet_access=rec.allow_internet_access,
                    auto_pause=rec.auto_pause,
                    owned=rec.owned,
                    access_token=rec.access_token,
                    key_id=rec.key_id,
                    key_name=rec.key_name,
                    started_at=rec.started_at,
                    end_at=rec.end_at,
                    egress_json=egress_json(rec.egress),
                )
            )

    def get(self, workspace_id: str, sandbox_id: str) -> SandboxRecord | None:
        query = select(e2b_sandboxes).where(
            e2b_sandboxes.c.workspace_id == workspace_id, e2b_sandboxes.c.sandbox_id == sandbox_id
        )
        with self.db.read() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _from_row(row)

    def by_id(self, sandbox_id: str) -> SandboxRecord | None:
        """For in-sandbox calls, which carry the sandbox id and its token but no API key."""
        with self.db.read() as conn:
            row = conn.execute(select(e2b_sandboxes).where(e2b_sandboxes.c.sandbox_id == sandbox_id))
            found = row.mappings().first()
        return None if found is None else _from_row(found)

    def by_id_with_key(self, sandbox_id: str) -> tuple[SandboxRecord | None, bool]:
        """``by_id`` and whether the key in-sandbox calls act as is still active (unrevoked),
        in one query: every command and file call asks both."""
        query = (
            select(e2b_sandboxes, api_keys.c.id.label("live_key_id"), api_keys.c.revoked_at)
            .outerjoin(api_keys, api_keys.c.id == e2b_sandboxes.c.key_id)
            .where(e2b_sandboxes.c.sandbox_id == sandbox_id)
        )
        with self.db.read() as conn:
            found = conn.execute(query).mappings().first()
        if found is None:
            return None, False
        return _from_row(found), found["live_key_id"] is not None and found["revoked_at"] is None

    def listing(self, workspace_id: str) -> list[SandboxRecord]:
        query = (
            select(e2b_sandboxes)
            .where(e2b_sandboxes.c.workspace_id == workspace_id, e2b_sandboxes.c.state != "killed")
            .order_by(e2b_sandboxes.c.started_at, e2b_sandboxes.c.sandbox_id)
        )
        with self.db.read() as conn:
            return [_from_row(r) for r in conn.execute(query).mappings()]

    def set(self, sandbox_id: str, **values: Any) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(e2b_sandboxes).where(e2b_sandboxes.c.sandbox_id == sandbox_id).values(**values)
            )

    def remove(self, sandbox_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(delete(e2b_sandboxes).where(e2b_sandboxes.c.sandbox_id == sandbox_id))

    def with_egress(self) -> list[SandboxRecord]:
        """Live sandboxes with egress rules: their runtime is told again at start-up."""
        query = select(e2b_sandboxes).where(
            e2b_sandboxes.c.state != "killed", e2b_sandboxes.c.egress_json != "{}"
        )
        with self.db.read() as conn:
            return [r for r in map(_from_row, conn.execute(query).mappings()) if r.egress.deny_out]

    def expired(self, now: float) -> list[SandboxRecord]:
        query = select(e2b_sandboxes).where(
            e2b_sandboxes.c.end_at <= now,
            e2b_sandboxes.c.state == "running",
            e2b_sandboxes.c.owned.is_(True),
        )
        with self.db.read() as conn:
            return [_from_row(r) for r in conn.execute(query).mappings()]

    def killed_with_namespace(self) -> list[SandboxRecord]:
        """Killed E2B-made sandboxes whose namespace is still there (a kill cut off by a crash)."""
        query = select(e2b_sandboxes).where(
            e2b_sandboxes.c.state == "killed",
            e2b_sandboxes.c.owned.is_(True),
            select(namespaces.c.id)
            .where(
                namespaces.c.workspace_id == e2b_sandboxes.c.workspace_id,
                namespaces.c.name == e2b_sandboxes.c.sandbox_id,
            )
            .exists(),
        )
        with self.db.read() as conn:
            return [_from_row(r) for r in conn.execute(query).mappings()]

    def snapshot_namespace(self, workspace_id: str, snapshot_id: str) -> str | None:
        """The namespace a Trove snapshot was taken of (E2B names snapshots without a sandbox)."""
        query = select(snapshots.c.namespace).where(
            snapshots.c.workspace_id == workspace_id, snapshots.c.id == snapshot_id
        )
        with self.db.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else str(row[0])

    def snapshot_ids(self, workspace_id: str, namespace: str | None) -> list[tuple[str, str | None]]:
        """(id, label) of the workspace's snapshots, or one namespace's; oldest first."""
        query = select(snapshots.c.id, snapshots.c.label).where(snapshots.c.workspace_id == workspace_id)
        if namespace is not None:
            query = query.where(snapshots.c.namespace == namespace)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(snapshots.c.created_at, snapshots.c.id)).all()
        return [(r[0], r[1]) for r in rows]
