"""A spare sandbox, started ahead for the namespace most likely created next.

Most of a new namespace's first call is its sandbox's start: the spawn chain and the agent's
python3 importing asyncio (~40 ms of ~55). A sandbox can only be started for a uid, a
directory, a cgroup and a network, and of those only the uid is the namespace's own: it is the
namespace's row number, known once the row exists. So the spare is started for the uid after
the last namespace provisioned (rows are numbered in order), with an empty directory, a cgroup
and a network of its own, all under a spare key, and nothing ever runs in it but the idle agent.

A namespace claims it only if the uids match, so a spare only ever becomes the sandbox of the
one namespace that owns its uid, and only while that namespace's directory is empty (the
spare's directory is renamed over it: ``rename`` refuses a directory with anything in it), its
cgroup and network are renamed to the namespace's key, and the namespace's egress rules are
applied to the network before the first call is sent. Any step failing stops the spare and the
namespace starts a sandbox of its own, as without spares. At most one is kept; a spare for
another uid is stopped when a new one is wanted; all are stopped with the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from trove_api.logs import detached_task
from trove_api.runtimes.local.agent_sandbox import AgentSandbox
from trove_api.runtimes.local.cgroups import Cgroups
from trove_api.runtimes.local.netns import SandboxNetworks

log = logging.getLogger(__name__)

SPARE_PREFIX = ".spare-"
# Two: a namespace created while the next one's spare is still starting finds one ready.
SPARES = 2
# After a spare failed to start, the next attempt waits this long (one warning, not one per exec).
_RETRY_AFTER_S = 30.0
Launch = Callable[[str, Path, int], Awaitable[AgentSandbox]]


@dataclass
class _Spare:
    uid: int
    key: str
    directory: Path
    sandbox: AgentSandbox | None = None


class SpareSandboxes:
    def __init__(
        self,
        root: Path,
        launch: Launch,
        cgroups: Cgroups,
        networks: SandboxNetworks | None,
        count: int = SPARES,
    ) -> None:
        self.root = root
        self._launch = launch
        self.cgroups = cgroups
        self.networks = networks
        self.count = count
        self._next: int | None = None
        self._ready: dict[int, _Spare] = {}
        self._starting: asyncio.Task[None] | None = None  # one at a time: it competes for CPU
        self._closed = False
        self._retry_at = 0.0
        self.claimed = 0  # first calls served by a spare (tests and the bench read it)

    def want(self, uid: int) -> None:
        """The uid of the next namespace: spares are started for it and those after it."""
        self._next = uid if self._next is None else max(self._next, uid)

    def _wanted(self) -> range:
        return range(0) if self._next is None else range(self._next, self._next + self.count)

    def fill(self) -> None:
        """Start the next spare wanted in the background (then the one after, and so on)."""
        if self._closed or (self._starting is not None and not self._starting.done()):
            return
        if time.monotonic() < self._retry_at:
            return
        wanted = self._wanted()
        stale = [spare for uid, spare in self._ready.items() if uid not in wanted or not _alive(spare)]
        for spare in stale:
            del self._ready[spare.uid]
        missing = [uid for uid in wanted if uid not in self._ready]
        if stale or missing:
            self._starting = detached_task(
                self._replace(stale, missing[0] if missing else None), name="trove-spare-sandbox"
            )

    async def claim(self, uid: int, key: str, directory: Path) -> AgentSandbox | None:
        """The spare as ``key``'s sandbox, ``directory`` its workspace; None if it cannot be."""
        spare = self._ready.pop(uid, None)
        if spare is None or spare.sandbox is None:
            return None
        sandbox = spare.sandbox
        if not sandbox.alive or not await asyncio.to_thread(self._bind, spare, key, directory):
            await self._discard(spare)
            return None
        sandbox.key = key
        self.claimed += 1
        self.fill()  # the next namespace's: started now, it is more likely ready when wanted
        return sandbox

    def _bind(self, spare: _Spare, key: str, directory: Path) -> bool:
        try:
            # Over an empty directory only (ENOTEMPTY otherwise): a namespace with files keeps them.
            os.rename(spare.directory, directory)
        except OSError:
            return False
        if not self.cgroups.rename(spare.key, key):
            return False
        return self.networks is None or self.networks.rekey(spare.key, key)

    async def _replace(self, stale: list[_Spare], uid: int | None) -> None:
        for old in stale:
            await self._discard(old)
        if uid is None:
            return
        key = f"{SPARE_PREFIX}{secrets.token_hex(6)}"
        spare = _Spare(uid, key, self.root / key)
        try:
            await asyncio.to_thread(_make_directory, spare.directory, uid)
            spare.sandbox = await self._launch(spare.key, spare.directory, uid)
        except Exception as exc:  # no spare: first calls start their sandbox themselves
            log.warning("starting a spare sandbox failed (next attempt in %.0f s): %s", _RETRY_AFTER_S, exc)
            self._retry_at = time.monotonic() + _RETRY_AFTER_S
            await self._discard(spare)
            return
        if self._closed or uid not in self._wanted() or uid in self._ready:
            await self._discard(spare)
            return
        self._ready[uid] = spare
        asyncio.get_running_loop().call_soon(self.fill)

    async def _discard(self, spare: _Spare) -> None:
        if spare.sandbox is not None:
            await spare.sandbox.stop()
        await asyncio.to_thread(self._remove, spare)

    def _remove(self, spare: _Spare) -> None:
        self.cgroups.remove(spare.key)
        if self.networks is not None:
            self.networks.drop(spare.key)
        with contextlib.suppress(OSError):
            spare.directory.rmdir()

    def sweep(self) -> None:
        """Spares' directories left by a server that stopped (empty: nothing ran in them)."""
        for entry in self.root.glob(f"{SPARE_PREFIX}*"):
            with contextlib.suppress(OSError):
                entry.rmdir()

    async def aclose(self) -> None:
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        spares, self._ready = list(self._ready.values()), {}
        for spare in spares:
            await self._discard(spare)


def _make_directory(directory: Path, uid: int) -> None:
    directory.mkdir(mode=0o700)
    os.chown(directory, uid, uid)
    os.chmod(directory, 0o700)


def _alive(spare: _Spare) -> bool:
    return spare.sandbox is not None and spare.sandbox.alive
