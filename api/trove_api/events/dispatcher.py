"""The webhook dispatcher: a durable queue in the database, drained by a background task.

Deliveries are rows (queued by ``log.record`` in the event's own transaction). The worker
claims due rows with a lease (``claimed_until``), so several replicas can share the queue
and a crashed worker's rows come back once its lease runs out; a clean stop releases its
leases at once. Each attempt is recorded in ``webhook_attempts``. Attempts run on the event
loop with httpx and a bounded concurrency, and database work runs in threads, so a slow or
dead receiver only ever occupies a delivery slot, never an API request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import and_, or_, select, update

from trove_api.events import retry, signing, targets
from trove_api.events.log import DELIVERIES_TOPIC, envelope_from_row
from trove_api.stores.db import Database
from trove_api.stores.tables import events, webhook_attempts, webhook_deliveries, webhooks
from trove_core.clock import now_ts
from trove_core.settings import Settings

log = logging.getLogger(__name__)

CLAIM_BATCH = 64
EXCERPT_CHARS = 512
RESPONSE_READ_MAX = 4096  # bytes of a receiver's answer ever read
USER_AGENT = "Trove-Webhooks/1"


@dataclass(frozen=True)
class Outcome:
    """What one attempt produced."""

    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int = 0
    retry_after: float | None = None
    excerpt: str | None = None
    final: bool = False  # no point retrying (refused target, hook gone)
    started_at: str = ""


@dataclass(frozen=True)
class Job:
    delivery_id: str
    webhook_id: str
    url: str
    secret: str
    body: bytes
    event_type: str
    event_id: str
    hook_live: bool


class Dispatcher:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.lease_s = settings.webhook_timeout_s + 30
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self._client: httpx.AsyncClient | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, run_worker: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.settings.webhook_timeout_s),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=self.settings.webhook_concurrency * 2),
        )
        if run_worker:
            self.db.listen(DELIVERIES_TOPIC, self._poke)
            self._task = asyncio.create_task(self._run(), name="trove-webhook-dispatcher")

    async def aclose(self) -> None:
        self.db.unlisten(DELIVERIES_TOPIC, self._poke)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        inflight = list(self._inflight.items())
        for _, task in inflight:
            task.cancel()
        for _, task in inflight:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if inflight:
            # Interrupted attempts go back to the queue now rather than when their lease ends.
            await asyncio.to_thread(self._release, [delivery_id for delivery_id, _ in inflight])
        if self._client is not None:
            await self._client.aclose()

    def _poke(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while True:
            free = min(CLAIM_BATCH, self.settings.webhook_concurrency - len(self._inflight))
            claimed: list[str] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception:  # the next tick is the retry
                    log.exception("claiming webhook deliveries failed")
            for index, delivery_id in enumerate(claimed):
                try:
                    await self._slots.acquire()
                except asyncio.CancelledError:
                    await asyncio.to_thread(self._release, claimed[index:])
                    raise
                task = asyncio.create_task(self._deliver_claimed(delivery_id))
                self._inflight[delivery_id] = task
                task.add_done_callback(functools.partial(self._done, delivery_id))
            if claimed and len(claimed) == free:
                continue  # there may be more due rows
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.webhook_poll_interval_s):
                    await self._wake.wait()
            self._wake.clear()

    async def _claim(self, limit: int) -> list[str]:
        """Claim due rows; a stop arriving meanwhile hands them back before it ends the loop.

        The claim commits in its thread whether or not the awaiting task is cancelled, so a
        stop must not simply abandon it: rows claimed that way would stay leased, and no
        replica (nor this server restarted) could retry them until the lease ran out.
        """
        claiming = asyncio.ensure_future(asyncio.to_thread(self._claim_due, limit))
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                orphans = await claiming
                if orphans:
                    await asyncio.to_thread(self._release, orphans)
            raise

    def _done(self, delivery_id: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(delivery_id, None)
        self._slots.release()
        # A slot opened: there may be more due rows than we could claim last time.
        self._wake.set()

    # -- one delivery ------------------------------------------------------------------------

    async def _deliver_claimed(self, delivery_id: str) -> None:
        try:
            job = await asyncio.to_thread(self._load, delivery_id)
            if job is None:
                return
            outcome = await self.attempt(job)
            await asyncio.to_thread(self._finish, job, outcome, False)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook delivery %s crashed; its lease will expire and it retries", delivery_id)

    async def deliver_now(self, delivery_id: str) -> Outcome:
        """One synchronous attempt at an already-claimed delivery (``/test``); never retried."""
        job = await asyncio.to_thread(self._load, delivery_id)
        if job is None:
            return Outcome(ok=False, status_code=None, error="delivery vanished", final=True)
        outcome = await self.attempt(job)
        await asyncio.to_thread(self._finish, job, outcome, True)
        return outcome

    async def attempt(self, job: Job) -> Outcome:
        """POST the signed event once; the outcome says whether and how it failed."""
        started_at = now_ts()
        outcome = await self._post(job)
        return dataclasses.replace(outcome, started_at=started_at)

    async def _post(self, job: Job) -> Outcome:
        if not job.hook_live:
            return Outcome(ok=False, status_code=None, error="webhook deleted or disabled", final=True)
        started = time.perf_counter()
        deadline = self.settings.webhook_timeout_s
        try:
            # One deadline for the whole attempt: httpx's timeouts are per phase and per read,
            # so a receiver trickling a byte at a time would otherwise hold the slot for ever.
            async with asyncio.timeout(deadline):
                return await self._exchange(job, started)
        except TimeoutError:
            return Outcome(
                ok=False,
                status_code=None,
                error=f"Delivery took longer than {deadline:g}s",
                duration_ms=_ms(started),
            )

    async def _exchange(self, job: Job, started: float) -> Outcome:
        assert self._client is not None, "dispatcher not started"
        try:
            target = await targets.resolve(job.url, allow_private=self.settings.webhook_allow_private)
        except targets.TargetRefused as exc:
            return Outcome(ok=False, status_code=None, error=str(exc), final=True)
        headers = {
            "Content-Type": "application/json",
            # The excerpt is read raw: a compressed answer could inflate far past its cap.
            "Accept-Encoding": "identity",
            signing.SIGNATURE_HEADER: signing.sign(job.secret, job.body),
            signing.EVENT_HEADER: job.event_type,
            signing.EVENT_ID_HEADER: job.event_id,
            signing.DELIVERY_HEADER: job.delivery_id,
            **target.headers,
        }
        try:
            request = self._client.build_request(
                "POST", target.url, content=job.body, headers=headers, extensions=target.extensions
            )
            response = await self._client.send(request, stream=True)
            try:
                head = await _read_at_most(response, RESPONSE_READ_MAX)
            finally:
                await response.aclose()  # the rest of the body is never read
        except httpx.HTTPError as exc:
            return Outcome(
                ok=False,
                status_code=None,
                error=f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS] or type(exc).__name__,
                duration_ms=_ms(started),
            )
        ok = 200 <= response.status_code < 300
        return Outcome(
            ok=ok,
            status_code=response.status_code,
            error=None if ok else f"HTTP {response.status_code}",
            duration_ms=_ms(started),
            retry_after=retry.parse_retry_after(response.headers.get("retry-after")),
            excerpt=head.decode("utf-8", "replace")[:EXCERPT_CHARS] if head else None,
        )

    # -- database (threads) ------------------------------------------------------------------

    def _claim_due(self, limit: int) -> list[str]:
        now = time.time()
        claimable = and_(
            webhook_deliveries.c.status == "pending",
            webhook_deliveries.c.next_attempt_at <= now,
            or_(webhook_deliveries.c.claimed_until.is_(None), webhook_deliveries.c.claimed_until < now),
        )
        claimed: list[str] = []
        with self.db.write() as conn:
            ids = conn.execute(
                select(webhook_deliveries.c.id)
                .where(claimable)
                .order_by(webhook_deliveries.c.next_attempt_at)
                .limit(limit)
            ).scalars()
            for delivery_id in list(ids):
                # Conditional per row: with several replicas only one wins each delivery.
                result = conn.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.id == delivery_id, claimable)
                    .values(claimed_until=now + self.lease_s)
                )
                if result.rowcount == 1:
                    claimed.append(delivery_id)
        return claimed

    def _release(self, delivery_ids: list[str]) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id.in_(delivery_ids), webhook_deliveries.c.status == "pending")
                .values(claimed_until=None)
            )

    def _load(self, delivery_id: str) -> Job | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(
                    webhook_deliveries.c.id,
                    webhooks.c.id.label("webhook_id"),
                    webhooks.c.url,
                    webhooks.c.secret,
                    webhooks.c.enabled,
                    webhooks.c.deleted_at,
                    webhook_deliveries.c.event_id,
                )
                .join(webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id)
                .where(webhook_deliveries.c.id == delivery_id)
            ).first()
            if row is None:
                return None
            event = conn.execute(select(events).where(events.c.id == row.event_id)).mappings().first()
        if event is None:
            return None
        body = json.dumps(envelope_from_row(event), separators=(",", ":"), ensure_ascii=False).encode()
        return Job(
            delivery_id=row.id,
            webhook_id=row.webhook_id,
            url=row.url,
            secret=row.secret,
            body=body,
            event_type=event["type"],
            event_id=event["id"],
            hook_live=bool(row.enabled) and row.deleted_at is None,
        )

    def _finish(self, job: Job, outcome: Outcome, one_shot: bool) -> None:
        started_at = outcome.started_at or now_ts()
        updated_at = now_ts()
        with self.db.write() as conn:
            current = conn.execute(
                select(webhook_deliveries.c.attempts, webhook_deliveries.c.status).where(
                    webhook_deliveries.c.id == job.delivery_id
                )
            ).first()
            if current is None:
                return
            previous = conn.execute(
                select(webhook_attempts.c.attempt)
                .where(webhook_attempts.c.delivery_id == job.delivery_id)
                .order_by(webhook_attempts.c.attempt.desc())
                .limit(1)
            ).scalar_one_or_none()
            conn.execute(
                webhook_attempts.insert().values(
                    delivery_id=job.delivery_id,
                    attempt=(previous or 0) + 1,
                    started_at=started_at,
                    duration_ms=outcome.duration_ms,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    response_excerpt=outcome.excerpt,
                )
            )
            # ``attempts`` counts this round (a manual retry starts a new one); the log keeps all.
            attempts = int(current.attempts) + 1
            values: dict[str, Any] = {
                "attempts": attempts,
                "claimed_until": None,
                "last_status_code": outcome.status_code,
                "last_error": outcome.error,
                "updated_at": updated_at,
            }
            if outcome.ok:
                values["status"] = "delivered"
            elif (
                one_shot
                or outcome.final
                or not retry.is_retryable(outcome.status_code)
                or attempts >= self.settings.webhook_max_attempts
            ):
                values["status"] = "failed"
            else:
                values["next_attempt_at"] = time.time() + retry.next_delay(
                    attempts,
                    base=self.settings.webhook_backoff_base_s,
                    cap=self.settings.webhook_backoff_max_s,
                    retry_after=outcome.retry_after,
                )
            conn.execute(
                update(webhook_deliveries).where(webhook_deliveries.c.id == job.delivery_id).values(**values)
            )
            if job.hook_live:
                conn.execute(
                    update(webhooks)
                    .where(webhooks.c.id == job.webhook_id)
                    .values(
                        last_delivery_at=started_at,
                        last_delivery_ok=outcome.ok,
                        last_delivery_status=outcome.status_code,
                    )
                )


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """The first ``limit`` bytes of the body as sent (no decoding), then stop reading."""
    head = bytearray()
    async for chunk in response.aiter_raw():
        head += chunk[: limit - len(head)]
        if len(head) >= limit:
            break
    return bytes(head)


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
