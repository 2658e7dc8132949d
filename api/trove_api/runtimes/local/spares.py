"""A spare sandbox, started ahead for the namespace most likely created next.

Most of a new namespace's first call is its sandbox's start: the spawn chain and the agent's
python3 importing asyncio (~40 ms of ~55). A sandbox can only be started for a uid, a
directory, a cgroup and a network, and of those only the uid is the namespace's own: it is the
namespace's row number, known once the row exists. So the spare is started for the uid after
the last namespace provisioned (rows are numbered in order), with an empty directory, a cgroup
and a network of its own, all under a spare key, and nothing ever runs in it but the idle agent.

A spare's directory never replaces one that exists, not even an empty one: a sandbox (this
server's or another's on the same data directory) may hold that directory bind-mounted, and
would go on writing into an unlinked one. So a spare is used only when this process creates the
namespace's directory: the spare's directory is moved there with RENAME_NOREPLACE (``place``),
which fails if anything, even an empty directory, is already there. Its first call then claims
it only if it is still that spare at that very directory (same uid, same inode): the spare's
cgroup and network are renamed to the namespace's key and its egress rules applied before the
call is sent. Anything else (no spare placed, a failed step) stops the spare and the namespace
starts a sandbox of its own, as without spares.

A placed spare's directory is the namespace's from then on: it is never removed with the spare.
Spares wait in one folder, ``<namespaces>/.spares``, server-owned and outside every namespace.
At most ``count`` are kept ready and ``count`` placed awaiting their first call (the oldest
placed is stopped for a newer one); all are stopped with the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
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
# Where spares' directories wait: server-owned, not inside any namespace (tree scans skip it).
SPARES_DIR = ".spares"
# Two: a namespace created while the next one's spare is still starting finds one ready.
SPARES = 2
# After a spare failed to start, the next attempt waits this long (one warning, not one per exec).
_RETRY_AFTER_S = 30.0
# How long ``place`` waits for the spare of its uid still starting (a start takes ~50 ms).
_WAIT_STARTING_S = 1.0
Launch = Callable[[str, Path, int], Awaitable[AgentSandbox]]


@dataclass
class _Spare:
    uid: int
    key: str
    directory: Path  # where it waits; once placed, no longer there
    sandbox: AgentSandbox | None = None
    placed: Path | None = None  # the namespace directory it was moved to, now the namespace's
    inode: tuple[int, int] | None = None  # (st_dev, st_ino) of that directory


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
        self.folder = root / SPARES_DIR
        self.folder.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self.folder, 0o711)  # bubblewrap binds by path: sandbox uids traverse it
        self._launch = launch
        self.cgroups = cgroups
        self.networks = networks
        self.count = count
        self._next: int | None = None
        self._ready: dict[int, _Spare] = {}
        self._placed: dict[Path, _Spare] = {}  # by namespace directory, oldest first
        self._starting: asyncio.Task[None] | None = None  # one at a time: it competes for CPU
        self._starting_uid: int | None = None  # the uid that start is for
        self._closed = False
        self._retry_at = 0.0
        self.claimed = 0  # first calls served by a spare (tests and the bench read it)

    def want(self, uid: int) -> None:
        """The uid of the next namespace: spares are started for it and those after it."""
        self._next = uid if self._next is None else max(self._next, uid)

    def forget(self, uid: int) -> None:
        """Namespace ``uid`` is gone. Were it the last one provisioned, the next namespace may
        get its number again: SQLite numbers a row one past the largest left (PostgreSQL's
        sequence does not reuse). Spares are then wanted from ``uid`` on, so both that number
        and the one after it are covered (E2B's kill and the next create, back to back)."""
        if self._next == uid + 1:
            self._next = uid

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
            self._starting_uid = missing[0] if missing else None
            self._starting = detached_task(
                self._replace(stale, missing[0] if missing else None), name="trove-spare-sandbox"
            )

    async def place(self, uid: int, directory: Path) -> bool:
        """Create ``directory`` as the ready spare of ``uid``'s own; False (nothing made) if it
        cannot be: no spare, or anything at ``directory`` already."""
        spare = self._ready.pop(uid, None)
        starting = self._starting
        if spare is None and starting is not None and not starting.done() and self._starting_uid == uid:
            # Namespaces created back to back: this uid's spare is still starting, and what is
            # left of its start is shorter than a start of the namespace's own. Not cancelled
            # here: a start that outlasts the wait goes on (``_replace`` decides where to).
            await asyncio.wait({starting}, timeout=_WAIT_STARTING_S)
            spare = self._ready.pop(uid, None)
        if spare is None:
            return False
        if not _alive(spare):
            await self._discard(spare)
            return False
        moving = asyncio.ensure_future(asyncio.to_thread(_move_noreplace, spare.directory, directory))
        try:
            inode = await asyncio.shield(moving)
        except asyncio.CancelledError:  # as in ``_bound``: taken from ``_ready``, stopped here
            with contextlib.suppress(Exception):
                if await moving is not None:
                    spare.placed = directory  # the namespace's directory now: it stays
            await self._discard(spare)
            raise
        if inode is None:
            await self._discard(spare)
            return False
        spare.placed, spare.inode = directory, inode
        if self._closed:
            await self._discard(spare)
            return True
        old = self._placed.pop(directory, None)  # a stale entry (deleted elsewhere): its spare goes
        self._placed[directory] = spare
        if old is not None:
            await self._discard(old)
        while len(self._placed) > self.count:  # never called yet: the oldest waits no longer
            await self._discard(self._placed.pop(next(iter(self._placed))))
        return True

    async def claim(self, uid: int, key: str, directory: Path) -> AgentSandbox | None:
        """The spare placed at ``directory`` as ``key``'s sandbox; None if there is none."""
        unused = self._ready.pop(uid, None)  # its directory can no longer be the namespace's
        if unused is not None:
            await self._discard(unused)
        spare = self._placed.pop(directory, None)
        if spare is None or spare.sandbox is None:
            return None
        sandbox = spare.sandbox
        if spare.uid != uid or not sandbox.alive or not await self._bound(spare, key, directory):
            await self._discard(spare)
            return None
        sandbox.key = key
        self.claimed += 1
        self.fill()  # the next namespace's: started now, it is more likely ready when wanted
        return sandbox

    async def drop(self, directory: Path) -> None:
        """Stop the spare placed at ``directory`` (its namespace is deleted or stopped)."""
        spare = self._placed.pop(directory, None)
        if spare is not None:
            await self._discard(spare)

    async def _bound(self, spare: _Spare, key: str, directory: Path) -> bool:
        """``_bind`` in a thread. Cancelled meanwhile (the call is gone: a shutdown, a pause or
        kill of the E2B warm-up), the spare is stopped once the thread is done with it, under
        the key it has then: it was taken from ``_placed``, no one else would."""
        binding = asyncio.ensure_future(asyncio.to_thread(self._bind, spare, key, directory))
        try:
            return await asyncio.shield(binding)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                if await binding:
                    spare.key = key
            await self._discard(spare)
            raise

    def _bind(self, spare: _Spare, key: str, directory: Path) -> bool:
        try:  # still the very directory it was placed as (not deleted and made anew elsewhere)
            st = directory.stat()
        except OSError:
            return False
        if (st.st_dev, st.st_ino) != spare.inode:
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
        spare = _Spare(uid, key, self.folder / key)
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
            # No longer wanted (a namespace deleted meanwhile, ``forget``): the one now wanted
            # starts next, not only at the next namespace's call.
            asyncio.get_running_loop().call_soon(self.fill)
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
        if spare.placed is None:  # a placed spare's directory is its namespace's: it stays
            with contextlib.suppress(OSError):
                spare.directory.rmdir()

    def sweep(self) -> None:
        """Spares' directories left by a server that stopped (empty: nothing ran in them).

        Only the waiting folder: a placed spare's directory is a namespace's, never touched."""
        for entry in self.folder.glob(f"{SPARE_PREFIX}*"):
            with contextlib.suppress(OSError):
                entry.rmdir()

    async def aclose(self) -> None:
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        spares = [*self._ready.values(), *self._placed.values()]
        self._ready, self._placed = {}, {}
        for spare in spares:
            await self._discard(spare)


def _make_directory(directory: Path, uid: int) -> None:
    directory.mkdir(mode=0o700)
    os.chown(directory, uid, uid)
    os.chmod(directory, 0o700)


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _move_noreplace(source: Path, target: Path) -> tuple[int, int] | None:
    """Move ``source`` to ``target`` unless anything is at ``target``: its (st_dev, st_ino), or
    None (nothing moved). Plain ``rename`` would replace an empty directory there."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
        st = source.stat()
    except (OSError, AttributeError):  # glibc < 2.28: no spares rather than a replacing rename
        return None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) != 0:
        return None  # EEXIST above all: the namespace's directory is there already, keep it
    return st.st_dev, st.st_ino


def _alive(spare: _Spare) -> bool:
    return spare.sandbox is not None and spare.sandbox.alive
