"""Dashboard sign-in: a key exchanged for a signed, expiring session, and the CSRF token bound to it.

The cookie carries the key's id, an expiry and a random nonce, signed with HMAC-SHA256; never
the key itself. Every request looks the key up again by id, so revoking the key ends its
sessions at once, as it ends the key's own requests; a sign-out records the nonce until the
session would have expired, so a copy of the cookie dies with it (on every replica). The
CSRF token is an HMAC of the nonce: a page can embed it, another site cannot compute it, and
it changes with every sign-in.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert, select

from trove_api.services.auth import Caller, authenticate, caller_of
from trove_api.services.ratelimit import RateLimiter
from trove_api.stores.db import Database
from trove_api.stores.tables import api_keys, dashboard_signouts
from trove_core.errors import UnauthenticatedError

SECRET_FILE = "dashboard.secret"  # noqa: S105 - a file name
_MAX_COOKIE_CHARS = 512


@dataclass(frozen=True)
class Session:
    caller: Caller
    csrf_token: str
    expires_at: float
    nonce: str


@dataclass(frozen=True)
class SignedIn:
    cookie: str
    session: Session


class DashboardSessions:
    def __init__(self, db: Database, secret: bytes, *, ttl_s: int, failures_per_minute: int = 20) -> None:
        self.db = db
        self._secret = secret
        self.ttl_s = ttl_s
        # Only failed sign-ins count: an operator signing in often is never locked out, a
        # client guessing keys is (checked before the key is even looked at).
        self._failures = RateLimiter(failures_per_minute)

    async def sign_in(self, api_key: str, client: str = "unknown") -> SignedIn:
        """A session for ``api_key`` (any live key: admin or workspace); 401 for anything else,
        429 after too many failures from ``client``."""
        self._failures.check(client, what="failed sign-ins")
        try:
            caller = await authenticate(self.db, f"Bearer {api_key.strip()}")
        except UnauthenticatedError:
            self._failures.hit(client, what="failed sign-ins")
            raise
        expires_at = time.time() + self.ttl_s
        nonce = secrets.token_urlsafe(16)
        payload = {"k": caller.key_id, "e": int(expires_at), "n": nonce}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        cookie = f"{body}.{self._sign(body)}"
        return SignedIn(
            cookie=cookie,
            session=Session(caller=caller, csrf_token=self._csrf(nonce), expires_at=expires_at, nonce=nonce),
        )

    async def resolve(self, cookie: str | None) -> Session:
        """The live session behind a cookie: signature, expiry and the key's state all checked."""
        if not cookie or len(cookie) > _MAX_COOKIE_CHARS or "." not in cookie:
            raise UnauthenticatedError("Not signed in")
        body, _, signature = cookie.partition(".")
        if not same(signature, self._sign(body)):
            raise UnauthenticatedError("Not signed in")
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            key_id, expires_at, nonce = str(payload["k"]), float(payload["e"]), str(payload["n"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UnauthenticatedError("Not signed in") from exc
        if expires_at < time.time():
            raise UnauthenticatedError("The dashboard session has expired: sign in again")
        caller = await asyncio.to_thread(self._caller, key_id, nonce)
        return Session(caller=caller, csrf_token=self._csrf(nonce), expires_at=expires_at, nonce=nonce)

    async def sign_out(self, session: Session) -> None:
        """End the session on every replica: a copy of its cookie is refused from now on."""
        await asyncio.to_thread(self._sign_out, session)

    def _sign_out(self, session: Session) -> None:
        with self.db.write() as conn:
            conn.execute(delete(dashboard_signouts).where(dashboard_signouts.c.expires_at < time.time()))
            known = conn.execute(
                select(dashboard_signouts.c.nonce).where(dashboard_signouts.c.nonce == session.nonce)
            ).first()
            if known is None:
                conn.execute(
                    insert(dashboard_signouts).values(nonce=session.nonce, expires_at=session.expires_at)
                )

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and same(session.csrf_token, str(token))

    def _caller(self, key_id: str, nonce: str) -> Caller:
        with self.db.read() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
            ended = conn.execute(
                select(dashboard_signouts.c.nonce).where(dashboard_signouts.c.nonce == nonce)
            ).first()
        if row is None or row["revoked_at"] is not None:
            raise UnauthenticatedError("The key behind this session was revoked: sign in again")
        if ended is not None:
            raise UnauthenticatedError("This session was signed out: sign in again")
        return caller_of(row)

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, b"session:" + body.encode(), hashlib.sha256).digest())

    def _csrf(self, nonce: str) -> str:
        return _b64(hmac.new(self._secret, b"csrf:" + nonce.encode(), hashlib.sha256).digest())


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of client text (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_secret(configured: str | None, data_dir: Path) -> bytes:
    """The configured secret, else one kept in the data dir (made once, readable by us alone)."""
    if configured:
        return configured.encode()
    path = data_dir / SECRET_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    fresh = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of this data dir made it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        out.write(fresh)
    return fresh
