"""Daily `auto-` snapshots of changed namespaces and the pruner, run once per day across restarts.

Each job claims its day in ``job_runs`` (primary key (job, day)) before doing anything, so a
restart, a second replica or the ``trove-server snapshots`` command never repeats a finished
day. A claim whose run died half-way (no ``finished_at`` after an hour) may be taken again;
that is safe because a namespace snapshotted by the dead run no longer counts as changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from trove_api.events import types
from trove_api.events.log import SYSTEM
from trove_api.services.snapshots import SnapshotRecord, SnapshotService, snapshot_from_row
from trove_api.stores.db import Database
from trove_api.stores.tables import events, job_runs, namespaces, snapshots
from trove_core.clock import format_ts, now_ts, parse_ts
from trove_core.errors import TroveError
from trove_core.names import AUTO_SNAPSHOT_PREFIX

log = logging.getLogger(__name__)

DAILY_JOB = "snapshots.daily"
PRUNE_JOB = "snapshots.prune"
STALE_CLAIM = timedelta(hours=1)
# What counts as a change since the last snapshot.
# A dashboard terminal may change anything, like an exec: its close counts as a change.
CHANGE_TYPES = (
    types.FILE_WRITTEN,
    types.FILE_DELETED,
    types.EXEC_COMPLETED,
    types.SNAPSHOT_RESTORED,
    types.TERMINAL_CLOSED,
)


@dataclass
class JobReport:
    job: str
    day: str
    ran: bool
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.ran:
            return f"{self.job} {self.day}: already done"
        parts = [f"{self.job} {self.day}:"]
        if self.job == DAILY_JOB:
            parts.append(f"{len(self.created)} snapshot(s) created")
        else:
            parts.append(f"{len(self.deleted)} snapshot(s) pruned")
        if self.failed:
            parts.append(f"{len(self.failed)} failed ({', '.join(self.failed)})")
        return " ".join(parts)


class SnapshotJobs:
    def __init__(
        self,
        db: Database,
        snapshots: SnapshotService,
        *,
        retention_days: int,
        daily_hour: int,
        interval_s: float,
        enabled: bool,
    ) -> None:
        self.db = db
        self.snapshots = snapshots
        self.retention = timedelta(days=retention_days)
        self.daily_hour = daily_hour
        self.interval_s = interval_s
        self.enabled = enabled
        self._task: asyncio.Task[None] | None = None

    # -- schedule -------------------------------------------------------------------------

    def period(self, now: datetime) -> date:
        """The day whose run is due: today from the daily hour on, else yesterday (catch-up)."""
        today = now.astimezone(UTC).date()
        return today if now.astimezone(UTC).hour >= self.daily_hour else today - timedelta(days=1)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="trove-snapshot-jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                # The next tick is the retry.
                log.exception("snapshot jobs failed")
            await asyncio.sleep(self.interval_s)

    async def tick(self, now: datetime | None = None) -> list[JobReport]:
        day = self.period(now or datetime.now(UTC))
        return [await self.run_daily(day), await self.prune(day)]

    # -- jobs -----------------------------------------------------------------------------

    async def run_daily(self, day: date, *, force: bool = False) -> JobReport:
        """Snapshot every namespace changed since its last snapshot (label ``auto-daily-<day>``)."""
        report = JobReport(DAILY_JOB, day.isoformat(), ran=False)
        if not await asyncio.to_thread(self._claim, DAILY_JOB, report.day, force):
            return report
        report.ran = True
        label = f"auto-daily-{report.day}"
        for workspace_id, name in await asyncio.to_thread(self._changed_namespaces):
            try:
                snap = await self.snapshots.create(workspace_id, name, label, SYSTEM, auto=True)
                report.created.append(snap.snapshot_id)
            except TroveError as exc:
                log.warning(
                    "daily snapshot of %s/%s failed: %s", workspace_id, name, exc.internal or exc.detail
                )
                report.failed.append(f"{workspace_id}/{name}")
        await asyncio.to_thread(self._finish, DAILY_JOB, report)
        return report

    async def prune(self, day: date, *, force: bool = False, now: datetime | None = None) -> JobReport:
        """Delete `auto-` snapshots older than the retention; `snap-` snapshots are never touched."""
        report = JobReport(PRUNE_JOB, day.isoformat(), ran=False)
        if not await asyncio.to_thread(self._claim, PRUNE_JOB, report.day, force):
            return report
        report.ran = True
        cutoff = format_ts((now or datetime.now(UTC)) - self.retention)
        for snap in await asyncio.to_thread(self._expired, cutoff):
            try:
                await self.snapshots.remove(snap, SYSTEM)
                report.deleted.append(snap.snapshot_id)
            except TroveError as exc:
                log.warning("pruning %s failed: %s", snap.snapshot_id, exc.internal or exc.detail)
                report.failed.append(snap.snapshot_id)
        await asyncio.to_thread(self._finish, PRUNE_JOB, report)
        return report

    # -- database -------------------------------------------------------------------------

    def _claim(self, job: str, run_key: str, force: bool) -> bool:
        started = now_ts()
        try:
            with self.db.write() as conn:
                row = conn.execute(
                    select(job_runs).where(job_runs.c.job == job, job_runs.c.run_key == run_key)
                ).one_or_none()
                if row is None:
                    conn.execute(insert(job_runs).values(job=job, run_key=run_key, started_at=started))
                    return True
                stale = row.finished_at is None and parse_ts(row.started_at) < datetime.now(UTC) - STALE_CLAIM
                if not (force or stale):
                    return False
                # Conditional on the claim we read: of two replicas retaking it, one wins.
                taken = conn.execute(
                    update(job_runs)
                    .where(
                        job_runs.c.job == job,
                        job_runs.c.run_key == run_key,
                        job_runs.c.started_at == row.started_at,
                    )
                    .values(started_at=started, finished_at=None, detail=None)
                ).rowcount
                return bool(taken == 1)
        except IntegrityError:
            return False  # another process claimed it first

    def _finish(self, job: str, report: JobReport) -> None:
        detail = json.dumps(
            {"created": report.created, "deleted": report.deleted, "failed": report.failed},
            separators=(",", ":"),
        )
        with self.db.write() as conn:
            conn.execute(
                update(job_runs)
                .where(job_runs.c.job == job, job_runs.c.run_key == report.day)
                .values(finished_at=now_ts(), detail=detail)
            )

    def _changed_namespaces(self) -> list[tuple[str, str]]:
        last_snapshot = (
            select(func.max(snapshots.c.created_at))
            .where(
                snapshots.c.workspace_id == namespaces.c.workspace_id,
                snapshots.c.namespace == namespaces.c.name,
            )
            # Correlate to the outer namespaces row explicitly: nested two levels deep,
            # auto-correlation would pick the wrong enclosing query.
            .correlate(namespaces)
            .scalar_subquery()
        )
        changed = (
            select(events.c.seq)
            .where(
                and_(
                    events.c.workspace_id == namespaces.c.workspace_id,
                    events.c.namespace == namespaces.c.name,
                    events.c.type.in_(CHANGE_TYPES),
                    events.c.created_at > func.coalesce(last_snapshot, ""),
                )
            )
            .correlate(namespaces)
            .exists()
        )
        query = (
            select(namespaces.c.workspace_id, namespaces.c.name)
            .where(changed)
            .order_by(namespaces.c.workspace_id, namespaces.c.name)
        )
        with self.db.read() as conn:
            return [(row.workspace_id, row.name) for row in conn.execute(query)]

    def _expired(self, cutoff: str) -> list[SnapshotRecord]:
        query = select(snapshots).where(
            snapshots.c.kind == "auto",
            snapshots.c.id.startswith(f"{AUTO_SNAPSHOT_PREFIX}-"),
            snapshots.c.created_at < cutoff,
        )
        with self.db.read() as conn:
            return [snapshot_from_row(row._mapping) for row in conn.execute(query)]
