"""CLI login by device code: start, poll, and approval by a person holding an admin key.

The CLI starts a flow (no auth) and polls; a person opens ``/cli?code=…``, confirms the
``XXXX-XXXX`` code, pastes an admin key and approves, which mints a workspace key. The key
waits in the row only until the first poll collects it; later polls answer ``expired``,
as do polls of codes that ran out (WIRE.md 3.3, A18). Only the device code's digest is
stored, so a database reader cannot collect someone else's key.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from trove_api.services.auth import Caller, require_admin
from trove_api.services.keys import MintedKey, insert_key
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
    def __init__(self, db: Database, *, ttl_s: int, interval_s: int) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.interval_s = interval_s

    def start(self, client: str | None) -> Started:
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

    def poll(self, device_code: str) -> dict[str, Any]:
        """Always a status (the CLI aborts on any 4xx); the key is handed out exactly once."""
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
                conn.execute(update(device_codes).where(where).values(status="expired", api_key=None))
                return {"status": "expired"}
            if status == "approved":
                # Conditional: of two polls racing on different replicas, one collects the key.
                taken = conn.execute(
                    update(device_codes)
                    .where(where, device_codes.c.status == "approved")
                    .values(status="consumed", api_key=None)
                ).rowcount
                if taken != 1:
                    return {"status": "expired"}
                return {"status": "approved", "api_key": row["api_key"], "workspace_id": row["workspace_id"]}
            if status == "denied":
                return {"status": "denied"}
            if status == "pending":
                return {"status": "pending"}
            return {"status": "expired"}  # consumed or expired

    def approve(
        self, caller: Caller, user_code: str, *, namespace: str | None, name: str | None
    ) -> MintedKey:
        """Mint a workspace key (optionally locked to ``namespace``) for the waiting CLI."""
        require_admin(caller)
        code = normalize_user_code(user_code)
        lock = (namespace or "").strip() or None
        if lock is not None:
            validate_namespace(lock)
        key_name = ((name or "").strip() or f"cli-login {code}")[:200]
        with self.db.write() as conn:
            self._pending(conn, code)
            minted = insert_key(
                conn,
                workspace_id=caller.workspace_id,
                name=key_name,
                namespace=lock,
                admin=False,
                actor=caller.actor,
            )
            _settle(
                conn,
                code,
                status="approved",
                workspace_id=caller.workspace_id,
                api_key=minted.api_key,
            )
        return minted

    def deny(self, caller: Caller, user_code: str) -> None:
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
        # Raising rolls back the whole transaction, including a key minted for this approval.
        raise DeviceCodeInvalidError(f"Login code {code} is unknown, expired or already used")
