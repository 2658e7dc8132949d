"""AppContext: the per-process singletons (settings, database, runtime, services) and their lifetime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trove_api.events.dispatcher import Dispatcher
from trove_api.events.hub import EventHub
from trove_api.metrics import Metrics
from trove_api.runtimes import make_runtime
from trove_api.services.dashboard_sessions import DashboardSessions, load_secret
from trove_api.services.device_login import DeviceLoginService
from trove_api.services.events import EventEmitter, EventFeedService
from trove_api.services.exec import ExecService
from trove_api.services.files import FileService
from trove_api.services.intents import IntentLog
from trove_api.services.keys import KeyService
from trove_api.services.namespace_catalog import NamespaceCatalog
from trove_api.services.namespace_locks import NamespaceLocks
from trove_api.services.namespaces import NamespaceService
from trove_api.services.ratelimit import RateLimiter
from trove_api.services.recovery import Recovery
from trove_api.services.snapshot_jobs import SnapshotJobs
from trove_api.services.snapshots import SnapshotService
from trove_api.services.sweeper import Sweeper
from trove_api.services.terminal import TerminalService
from trove_api.services.webhooks import WebhookService
from trove_api.stores.db import Database
from trove_api.stores.snapshots import SnapshotStore, make_snapshot_store
from trove_core.diskspace import MIB, DiskReserve
from trove_core.runtime import Runtime
from trove_core.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    db: Database
    runtime: Runtime
    metrics: Metrics
    emitter: EventEmitter
    namespaces: NamespaceService
    files: FileService
    execs: ExecService
    terminals: TerminalService
    keys: KeyService
    hub: EventHub
    dispatcher: Dispatcher
    event_feed: EventFeedService
    webhooks: WebhookService
    device_login: DeviceLoginService
    device_start_limit: RateLimiter
    device_form_limit: RateLimiter
    snapshot_store: SnapshotStore
    snapshots: SnapshotService
    snapshot_jobs: SnapshotJobs
    intents: IntentLog
    sweeper: Sweeper
    dashboard_sessions: DashboardSessions
    catalog: NamespaceCatalog

    @classmethod
    def open(cls, settings: Settings, runtime: Runtime | None = None) -> AppContext:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        db.migrate()
        _make_private(settings.data_dir)
        runtime = runtime or make_runtime(settings)
        emitter = EventEmitter(db)
        namespaces = NamespaceService(
            db,
            runtime,
            settings.sandbox_uid_base,
            max_per_workspace=settings.max_namespaces_per_workspace,
            reserve=data_reserve(settings),
        )
        # On PostgreSQL the locks hold across replicas too (advisory locks).
        locks = NamespaceLocks(db.session_locks)
        snapshot_store = make_snapshot_store(settings)
        intents = IntentLog(db)
        snapshot_service = SnapshotService(db, runtime, snapshot_store, namespaces, emitter, locks, intents)
        recovery = Recovery(db, intents, runtime, snapshot_store, namespaces, locks)
        hub = EventHub(db, poll_interval=settings.events_poll_interval_s)
        dispatcher = Dispatcher(db, settings)
        event_feed = EventFeedService(db, hub, keepalive_s=settings.sse_keepalive_s)
        return cls(
            settings=settings,
            db=db,
            runtime=runtime,
            metrics=Metrics(),
            emitter=emitter,
            namespaces=namespaces,
            files=FileService(
                runtime,
                namespaces,
                emitter,
                write_max_bytes=settings.write_max_bytes,
                upload_max_bytes=settings.upload_max_bytes,
                locks=locks,
                intents=intents,
            ),
            execs=ExecService(
                runtime,
                namespaces,
                emitter,
                timeout_s=settings.exec_timeout_s,
                output_limit=settings.exec_output_bytes,
                locks=locks,
                intents=intents,
            ),
            keys=KeyService(db),
            hub=hub,
            dispatcher=dispatcher,
            event_feed=event_feed,
            terminals=TerminalService(runtime, namespaces, emitter, event_feed),
            webhooks=WebhookService(db, dispatcher),
            device_login=DeviceLoginService(
                db,
                ttl_s=settings.device_code_ttl_s,
                interval_s=settings.device_poll_interval_s,
                default_namespace=settings.device_default_namespace,
            ),
            device_start_limit=RateLimiter(settings.device_start_rate),
            device_form_limit=RateLimiter(settings.device_form_rate),
            snapshot_store=snapshot_store,
            snapshots=snapshot_service,
            snapshot_jobs=SnapshotJobs(
                db,
                snapshot_service,
                retention_days=settings.snapshot_retention_days,
                daily_hour=settings.snapshot_daily_hour,
                interval_s=settings.snapshot_job_interval_s,
                enabled=settings.snapshot_daily,
            ),
            intents=intents,
            sweeper=Sweeper(
                recovery,
                snapshot_store,
                getattr(runtime, "sweep_staging", None),
                interval_s=settings.sweep_interval_s,
                stale_s=settings.stale_temp_s,
            ),
            dashboard_sessions=DashboardSessions(
                db,
                load_secret(
                    settings.dashboard_secret.get_secret_value() if settings.dashboard_secret else None,
                    settings.data_dir,
                ),
                ttl_s=settings.dashboard_session_ttl_s,
                failures_per_minute=settings.device_form_rate,
            ),
            catalog=NamespaceCatalog(db, runtime, settings.sandbox_uid_base),
        )

    async def start(self) -> None:
        """Start the background tasks: the SSE event hub, the webhook dispatcher, daily snapshots,
        and the sweep, whose first pass resolves what a crash of the previous run left."""
        await self.hub.start()
        await self.dispatcher.start(run_worker=self.settings.webhook_dispatch)
        self.snapshot_jobs.start()
        self.sweeper.start()
        start_runtime = getattr(self.runtime, "start_background", None)  # Kubernetes only
        if start_runtime is not None:
            start_runtime()

    async def aclose(self) -> None:
        await self.sweeper.stop()
        await self.snapshot_jobs.stop()
        await self.dispatcher.aclose()
        await self.hub.aclose()
        await self.runtime.aclose()
        await self.snapshot_store.aclose()
        await self.intents.aclose()
        self.db.dispose()


def data_reserve(settings: Settings) -> DiskReserve:
    """The free space kept on the data dir, where it holds the database or namespace files."""
    if settings.runtime != "local" and settings.database_url is not None:
        return DiskReserve.off()
    return DiskReserve(settings.data_dir, settings.data_reserve_mb * MIB)


def _make_private(data_dir: Path) -> None:
    # The database holds key digests and the event log: readable by the server alone.
    for path in data_dir.glob("trove.db*"):
        path.chmod(0o600)
