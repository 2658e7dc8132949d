"""The warm set: at most one running sandbox per namespace, started on first use, stopped when idle.

A namespace's sandbox starts with its first call (one start however many calls arrive at once:
the others wait on the namespace's lock), is stopped after ``idle_s`` without calls, and when
``max_warm`` are running a new one first stops the least recently used idle one; one with a call
in flight is never stopped for room (then the set runs over until calls end). A sandbox whose
agent died is replaced by the next call; the calls it had in flight got ``ChannelLostError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from trove_api.logs import detached_task
from trove_api.runtimes.channel.session import AgentSession
from trove_api.runtimes.local.agent_sandbox import AgentSandbox
from trove_core.errors import UnavailableError

log = logging.getLogger(__name__)

Starter = Callable[[], Awaitable[AgentSandbox]]


class WarmSandboxes:
    def __init__(self, *, idle_s: float, max_warm: int) -> None:
        self.idle_s = idle_s
        self.max_warm = max_warm
        self.warm: dict[str, AgentSandbox] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._starting: set[asyncio.Future[AgentSandbox]] = set()  # cancelled by aclose
        self.started = 0  # sandboxes started so far (tests and the bench read it)

    async def session(self, key: str, start: Starter) -> AgentSession:
        sandbox = self.warm.get(key)
        if sandbox is not None and sandbox.alive:
            sandbox.touch()
            return sandbox.session
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._closed:  # aclose went past this lock: nothing started now would be stopped
                raise _shutting_down()
            sandbox = self.warm.get(key)
            if sandbox is not None and sandbox.alive:
                sandbox.touch()
                return sandbox.session
            if sandbox is not None:  # its agent died: clear what is left before the new one
                await self.stop(key)
            await self._make_room()
            sandbox = await self._start(start)
            self.started += 1
            self.warm[key] = sandbox
            self._ensure_reaper()
            return sandbox.session

    async def _start(self, start: Starter) -> AgentSandbox:
        """``start()`` in a future of its own, which aclose cancels: a cancelled start stops
        what it spawned (``AgentSandbox.start``), and the caller is told the server is going."""
        if self._closed:  # while room was being made
            raise _shutting_down()
        starting = asyncio.ensure_future(start())
        self._starting.add(starting)
        try:
            sandbox = await starting
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if self._closed and not (caller is not None and caller.cancelling()):
                raise _shutting_down() from None
            raise
        finally:
            self._starting.discard(starting)
        if self._closed:  # it ended just as aclose began, which would not see it in ``warm``
            await sandbox.stop()
            raise _shutting_down()
        return sandbox

    async def stop(self, key: str) -> None:
        sandbox = self.warm.pop(key, None)
        if sandbox is not None:
            await sandbox.stop()

    async def _make_room(self) -> None:
        while len(self.warm) >= self.max_warm:
            idle = [(s.last_used, k) for k, s in self.warm.items() if not s.busy]
            if not idle:
                log.warning("%d sandboxes are warm and all are busy: starting one more", len(self.warm))
                return
            await self.stop(min(idle)[1])

    async def stop_idle(self) -> int:
        """Stop the sandboxes unused for ``idle_s`` (and the dead ones); returns how many."""
        cutoff = time.monotonic() - self.idle_s
        stale = [
            key
            for key, sandbox in self.warm.items()
            if not sandbox.alive or (sandbox.last_used < cutoff and not sandbox.busy)
        ]
        for key in stale:
            lock = self._locks.get(key)
            if lock is not None and lock.locked():
                continue  # a call is starting or replacing it right now
            sandbox = self.warm.get(key)
            if sandbox is not None and sandbox.alive and (sandbox.busy or sandbox.last_used >= cutoff):
                continue  # used while the ones before it were stopped
            await self.stop(key)
        return len(stale)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = detached_task(self._reap(), name="trove-sandbox-reaper")

    async def _reap(self) -> None:
        period = max(0.05, min(self.idle_s / 4, 30.0))
        while self.warm:
            await asyncio.sleep(period)
            try:
                await self.stop_idle()
            except Exception:  # the next round is the retry
                log.exception("stopping idle sandboxes failed")

    async def aclose(self) -> None:
        """Stop every sandbox, those still starting too (cancelled: a shutdown waits for no
        agent's hello); a call that comes later is refused. A start in flight holds its
        namespace's lock until it has cleaned up: taking each lock waits for that."""
        self._closed = True
        for starting in list(self._starting):
            starting.cancel()
        for lock in list(self._locks.values()):
            async with lock:
                pass
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(self.stop(key) for key in list(self.warm)), return_exceptions=True)


def _shutting_down() -> UnavailableError:
    return UnavailableError("The server is shutting down; retry", retry_after=2)
