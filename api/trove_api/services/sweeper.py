"""The periodic sweep: resolve what crashed or abandoned calls left, while the server runs.

Without it a snapshot temp file from a killed create stayed until the next start-up, and a
dead replica's pending events (intents) until some replica restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from trove_api.services.recovery import Recovery
from trove_api.stores.snapshots import SnapshotStore

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(
        self,
        recovery: Recovery,
        store: SnapshotStore,
        staging: Callable[[float], Awaitable[int]] | None,
        *,
        interval_s: float,
        stale_s: float,
    ) -> None:
        self.recovery = recovery
        self.store = store
        self.staging = staging
        self.interval_s = interval_s
        self.stale_s = stale_s
        self._task: asyncio.Task[None] | None = None
        # Set once the first pass has run: until then a crash's pending events may be missing
        # from the log, so the server does not call itself ready (``/readyz``).
        self.first_pass_done = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="trove-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            finally:
                self.first_pass_done.set()
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> None:
        """One pass; each part fails alone (logged) and the next pass is its retry."""
        steps: list[tuple[str, Callable[[], Awaitable[int]]]] = [
            ("pending events", self.recovery.run),
            ("snapshot temp files", lambda: self.store.sweep(self.stale_s)),
        ]
        if self.staging is not None:
            staging = self.staging
            steps.append(("staging leftovers", lambda: staging(self.stale_s)))
        for what, step in steps:
            try:
                done = await step()
            except Exception:
                log.exception("sweep of %s failed", what)
                continue
            if done:
                log.info("swept %d %s", done, what)
