"""CLI login by device code: start, poll, and approval by a person holding an admin key.

The CLI starts a flow (no auth) and polls; a person opens ``/cli?code=…``, confirms the
``XXXX-XXXX`` code (the page shows who asked, and when), pastes an admin key and approves.
The approval records the new key's id, name and namespace lock; the first poll after it
mints the key and hands it out, exactly once; later polls answer ``expired``, as do polls of
codes that ran out (WIRE.md 3.3, A18). The database holds only the device code's digest and
never a key in the clear: a database reader can neither collect nor read someone's key.

A key minted this way is locked to a namespace unless the approver asks for an unlocked
one: a terminal that logs in should not get the run of every namespace by default.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from trove_api.events.log import Actor
from trove_api.services.auth import Caller, require_admin
from trove_api.services.keys import insert_key, new_key_id
from trove_api.stores.db import Database
from trove_api.stores.tables import device_codes
from trove_core.errors import DeviceCodeInvalidError
from trove_core.names import validate_namespace

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ23456789"  # no vowels (no words), no 0/O/1/I
KEEP_EXPIRED_S = 86_400


@dataclass(frozen=True)
class Started:
    device_code: str
    user_code: str
    interval: int
    expires_in: int


@dataclass(frozen=True)
class Waiting:
    client: str | None
    requested_at: float  # unix time


@dataclass(frozen=True)
class Approval:
    key_id: str
    workspace_id: str
    namespace: str | None


def new_user_code() -> str:
    chars = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def normalize_user_code(raw: str) -> str:
    """``abcd1234``, `` ABCD-1234 `` → ``ABCD-1234``."""
    chars = "".join(ch for ch in raw.upper() if ch.isalnum())
    if len(chars) != 8:
        raise DeviceCodeInvalidError("A login code looks like ABCD-1234")
    return f"{chars[:4]}-{chars[4:]}"


def _digest(device_code: str) -> str:
    return hashlib.sha256(device_code.encode("utf-8")).hexdigest()


class DeviceLoginService:
    def __init__(
        self, db: Database, *, ttl_s: int, interval_s: int, default_namespace: str = "default"
    ) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self.default_namespace = validate_namespace(default_namespace)

    async def start(self, client: str | None) -> Started:
        return await asyncio.to_thread(self._start, client)

    def _start(self, client: str | None) -> Started:
        now = time.time()
        device_code = secrets.token_urlsafe(32)
        for _ in range(5):
            user_code = new_user_code()
            try:
                with self.db.write() as conn:
                    conn.execute(delete(device_codes).where(device_codes.c.expires_at < now - KEEP_EXPIRED_S))
                    conn.execute(
                        insert(device_codes).values(
                            device_code_digest=_digest(device_code),
                            user_code=user_code,
                            status="pending",
                            created_at=now,
                            expires_at=now + self.ttl_s,
                            client=(client or "")[:128] or None,
                        )
                    )
                return Started(device_code, user_code, self.interval_s, self.ttl_s)
            except IntegrityError:
                continue  # a user-code collision: draw again
        raise RuntimeError("could not allocate a unique user code")

    async def poll(self, device_code: str) -> dict[str, Any]:
        """Always a status (the CLI aborts on any 4xx); the key is minted and handed out once."""
        return await asyncio.to_thread(self._poll, device_code)

    def _poll(self, device_code: str) -> dict[str, Any]:
        now = time.time()
        with self.db.write() as conn:
            row = (
                conn.execute(
                    select(device_codes).where(device_codes.c.device_code_digest == _digest(device_code))
                )
                .mappings()
                .first()
            )
            if row is None:
                return {"status": "expired"}
            status = row["status"]
            where = device_codes.c.device_code_digest == row["device_code_digest"]
            if status in ("pending", "approved") and now > row["expires_at"]:
                conn.execute(update(device_codes).where(where).values(status="expired"))
                return {"status": "expired"}
            if status == "approved":
                # Conditional: of two polls racing on different replicas, one mints the key.
                taken = conn.execute(
                    update(device_codes)
                    .where(where, device_codes.c.status == "approved")
                    .values(status="consumed")
                ).rowcount
                if taken != 1:
                    return {"status": "expired"}
                minted = insert_key(
                    conn,
                    workspace_id=row["workspace_id"],
                    name=row["key_name"],
                    namespace=row["key_namespace"],
                    admin=False,
                    actor=Actor(key_id=row["approver_key_id"], key_name=row["approver_key_name"]),
                    key_id=row["key_id"],
                )
                return {"status": "approved", "api_key": minted.api_key, "workspace_id": row["workspace_id"]}
            if status == "denied":
                return {"status": "denied"}
            if status == "pending":
                return {"status": "pending"}
            return {"status": "expired"}  # consumed or expired

    async def waiting(self, user_code: str) -> Waiting | None:
        """Who asked for a pending code, and when (shown on the approval page)."""
        return await asyncio.to_thread(self._waiting, user_code)

    def _waiting(self, user_code: str) -> Waiting | None:
        try:
            code = normalize_user_code(user_code)
        except DeviceCodeInvalidError:
            return None
        with self.db.read() as conn:
            row = (
                conn.execute(select(device_codes).where(device_codes.c.user_code == code)).mappings().first()
            )
        if row is None or row["status"] != "pending" or time.time() > row["expires_at"]:
            return None
        return Waiting(client=row["client"], requested_at=float(row["created_at"]))

    async def approve(
        self,
        caller: Caller,
        user_code: str,
        *,
        namespace: str | None,
        name: str | None,
        all_namespaces: bool = False,
    ) -> Approval:
        """Approve the waiting CLI: its first poll gets a workspace key, locked to ``namespace``.

        Without a namespace the key is locked to the default namespace, unless
        ``all_namespaces`` asks for an unlocked key.
        """
        return await asyncio.to_thread(
            self._approve, caller, user_code, namespace=namespace, name=name, all_namespaces=all_namespaces
        )

    def _approve(
        self,
        caller: Caller,
        user_code: str,
        *,
        namespace: str | None,
        name: str | None,
        all_namespaces: bool = False,
    ) -> Approval:
        require_admin(caller)
        code = normalize_user_code(user_code)
        lock = (namespace or "").strip() or None
        if lock is not None:
            validate_namespace(lock)
        elif not all_namespaces:
            lock = self.default_namespace
        key_name = ((name or "").strip() or f"cli-login {code}")[:200]
        key_id = new_key_id()
        with self.db.write() as conn:
            self._pending(conn, code)
            _settle(
                conn,
                code,
                status="approved",
                workspace_id=caller.workspace_id,
                key_id=key_id,
                key_name=key_name,
                key_namespace=lock,
                approver_key_id=caller.key_id,
                approver_key_name=caller.key_name,
            )
        return Approval(key_id=key_id, workspace_id=caller.workspace_id, namespace=lock)

    async def deny(self, caller: Caller, user_code: str) -> None:
        await asyncio.to_thread(self._deny, caller, user_code)

    def _deny(self, caller: Caller, user_code: str) -> None:
        require_admin(caller)
        code = normalize_user_code(user_code)
        with self.db.write() as conn:
            self._pending(conn, code)
            _settle(conn, code, status="denied")

    def _pending(self, conn: Any, code: str) -> None:
        row = conn.execute(select(device_codes).where(device_codes.c.user_code == code)).mappings().first()
        if row is None or row["status"] != "pending" or time.time() > row["expires_at"]:
            raise DeviceCodeInvalidError(f"Login code {code} is unknown, expired or already used")


def _settle(conn: Any, code: str, **values: Any) -> None:
    """Approve or deny a pending code; of two admins racing (two replicas), the second fails."""
    changed = conn.execute(
        update(device_codes)
        .where(device_codes.c.user_code == code, device_codes.c.status == "pending")
        .values(**values)
    ).rowcount
    if changed != 1:
        raise DeviceCodeInvalidError(f"Login code {code} is unknown, expired or already used")
