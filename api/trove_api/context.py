"""AppContext: the per-process singletons (settings, database, runtime, services) and their lifetime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trove_api.metrics import Metrics
from trove_api.runtimes import make_runtime
from trove_api.services.events import EventEmitter
from trove_api.services.exec import ExecService
from trove_api.services.files import FileService
from trove_api.services.keys import KeyService
from trove_api.services.namespaces import NamespaceService
from trove_api.stores.db import Database
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
    keys: KeyService

    @classmethod
    def open(cls, settings: Settings, runtime: Runtime | None = None) -> AppContext:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        db.migrate()
        _make_private(settings.data_dir)
        runtime = runtime or make_runtime(settings)
        emitter = EventEmitter(db)
        namespaces = NamespaceService(db, runtime, settings.sandbox_uid_base)
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
            ),
            execs=ExecService(
                runtime,
                namespaces,
                emitter,
                timeout_s=settings.exec_timeout_s,
                output_limit=settings.exec_output_bytes,
            ),
            keys=KeyService(db),
        )

    async def aclose(self) -> None:
        await self.runtime.aclose()
        self.db.dispose()


def _make_private(data_dir: Path) -> None:
    # The database holds key digests and the event log: readable by the server alone.
    for path in data_dir.glob("trove.db*"):
        path.chmod(0o600)
