"""E2B commands and terminals over the Runtime's processes that outlive a call.

The policy the Connect service (``process``) leaves to this module: the sandbox's stored envs
under the command's own, E2B's home as the default cwd, E2B's command timeout (the process is
killed when it expires, as E2B's envd does), and one ``exec.completed`` event per finished
command so ``trove tail`` sees E2B commands as it sees ``/v1/exec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import signal
import time
from collections.abc import AsyncGenerator, Mapping

from trove_api.context import AppContext
from trove_api.e2b import paths
from trove_api.e2b.records import SandboxRecord
from trove_api.e2b.sandboxes import owner_caller
from trove_api.events import types
from trove_api.services.exec import EVENT_PREVIEW_BYTES, rewrite_paths
from trove_core.errors import ProcessNotFoundError, TroveError
from trove_core.runtime import NamespaceRef, ProcessEnd, ProcessInfo, ProcessOutput, ProcessSpec, PtySize

log = logging.getLogger(__name__)
# Output the event's previews are taken from; past it only the exit is awaited.
FOLLOW_BYTES = 64 * 1024


def _preview(data: bytes, aliases: list[str]) -> str:
    text = rewrite_paths(data[:EVENT_PREVIEW_BYTES].decode("utf-8", "replace"), aliases)
    return text + ("…" if len(data) > EVENT_PREVIEW_BYTES else "")


def e2b_cwd(rel: str) -> str:
    """A namespace-relative cwd as E2B names it (``workspace/x`` is ``/home/user/x``)."""
    root = paths.to_trove(paths.HOME)
    if rel == root or rel.startswith(root + "/"):
        return paths.to_e2b(rel[len(root) + 1 :])
    return rel


class E2bProcesses:
    """One per app; every method takes the sandbox record the caller was authenticated for."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._watchers: set[asyncio.Task[None]] = set()
        # Per sandbox id, the pids of the commands and terminals E2B started that still run.
        self._live: dict[str, set[int]] = {}

    async def _ns(self, rec: SandboxRecord) -> NamespaceRef:
        caller = owner_caller(rec)
        return await self.ctx.namespaces.ensure(caller.workspace_id, rec.sandbox_id, caller.actor)

    async def start(
        self,
        rec: SandboxRecord,
        *,
        cmd: str,
        args: list[str],
        envs: Mapping[str, str],
        cwd: str | None,
        pty: PtySize | None,
        tag: str | None,
        stdin: bool,
        timeout_s: float | None,
    ) -> tuple[NamespaceRef, ProcessInfo]:
        ns = await self._ns(rec)
        spec = ProcessSpec(
            argv=(cmd, *args),
            env={**rec.envs, **envs},
            cwd=paths.to_trove(cwd or paths.HOME),
            pty=pty,
            tag=tag,
            stdin=stdin or pty is not None,
        )
        info = await self.ctx.runtime.start_process(ns, spec)
        self._live.setdefault(rec.sandbox_id, set()).add(info.pid)
        watcher = asyncio.create_task(self._watch(rec, ns, info, timeout_s), name=f"e2b-proc-{info.pid}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return ns, info

    async def _watch(
        self, rec: SandboxRecord, ns: NamespaceRef, info: ProcessInfo, timeout_s: float | None
    ) -> None:
        """Follows the process to its end: kills it at its timeout, then emits exec.completed."""
        started = time.monotonic()
        kept = {"stdout": bytearray(), "stderr": bytearray(), "pty": bytearray()}
        sizes = dict.fromkeys(kept, 0)
        exit_code: int | None = None
        timed_out = False

        async def follow() -> None:
            nonlocal exit_code
            items = self.ctx.runtime.process_output(ns, info.pid, info.cursor)
            try:
                async for item in items:
                    if isinstance(item, ProcessEnd):
                        exit_code = item.exit_code
                        return
                    sizes[item.stream] += len(item.data)
                    room = EVENT_PREVIEW_BYTES + 1 - len(kept[item.stream])
                    if room > 0:
                        kept[item.stream] += item.data[:room]
                    if sum(sizes.values()) > FOLLOW_BYTES:
                        break  # enough for the previews: a flood is not read twice
            finally:
                aclose = getattr(items, "aclose", None)
                if aclose is not None:
                    await aclose()
            exit_code = await self.ctx.runtime.wait_process(ns, info.pid)

        follower = asyncio.ensure_future(follow())
        follower.add_done_callback(lambda _: self._forget(rec.sandbox_id, info.pid))
        try:
            done, _ = await asyncio.wait({follower}, timeout=timeout_s)
            if not done:
                timed_out = True
                with contextlib.suppress(ProcessNotFoundError):
                    await self.ctx.runtime.signal_process(ns, info.pid, signal.SIGKILL)
            await follower
        except asyncio.CancelledError:
            follower.cancel()
            raise
        except Exception:
            follower.cancel()
            # The sandbox stopped under it (its processes went with it): nothing to report.
            log.info("e2b process %s in %s ended without an end", info.pid, rec.sandbox_id, exc_info=True)
            return
        aliases = list(self.ctx.runtime.path_aliases(ns))
        caller = owner_caller(rec)
        await self.ctx.emitter.emit(
            workspace_id=rec.workspace_id,
            namespace=rec.sandbox_id,
            type_=types.EXEC_COMPLETED,
            actor=caller.actor,
            data={
                "command": shlex.join(info.argv)[:EVENT_PREVIEW_BYTES],
                "exit_code": None if timed_out else exit_code,
                "duration_ms": int((time.monotonic() - started) * 1000),
                "stdout": _preview(bytes(kept["stdout"] or kept["pty"]), aliases),
                "stderr": _preview(bytes(kept["stderr"]), aliases),
                "timed_out": timed_out,
                "truncated": any(size > EVENT_PREVIEW_BYTES for size in sizes.values()),
                "e2b": True,
            },
        )

    def _forget(self, sandbox_id: str, pid: int) -> None:
        pids = self._live.get(sandbox_id)
        if pids is not None:
            pids.discard(pid)
            if not pids:
                del self._live[sandbox_id]

    async def end_sandbox(self, rec: SandboxRecord) -> None:
        """The sandbox's E2B session ended or paused (kill, pause, timeout): as on E2B, nothing
        it started runs on, and every stream of its commands ends now. An owned sandbox stops
        whole (its caller does that), and its processes with it; an adopted namespace stays
        trove-sdk's, so each is killed here (its whole group, as envd's kill does). Processes
        trove-sdk started are not E2B's: left alone."""
        pids = self._live.pop(rec.sandbox_id, set())
        if rec.owned or not pids:
            return
        ns = await self.ctx.namespaces.find(rec.workspace_id, rec.sandbox_id)
        if ns is None:
            return
        for pid in sorted(pids):
            with contextlib.suppress(TroveError):  # ended meanwhile, or the sandbox stopped
                await self.ctx.runtime.signal_process(ns, pid, signal.SIGKILL)

    async def output(
        self, ns: NamespaceRef, pid: int, cursor: int
    ) -> AsyncGenerator[ProcessOutput | ProcessEnd]:
        """Every byte, as E2B's envd gives it: the process waits for a reader that lags."""
        items = self.ctx.runtime.process_output(ns, pid, cursor, hold=True)
        try:
            async for item in items:
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    async def find(
        self, rec: SandboxRecord, pid: int | None, tag: str | None
    ) -> tuple[NamespaceRef, ProcessInfo]:
        """The process a selector names (by pid or by tag), running or recently ended."""
        ns = await self._ns(rec)
        for info in await self.ctx.runtime.list_processes(ns):
            if (pid is not None and info.pid == pid) or (tag is not None and info.tag == tag):
                return ns, info
        raise ProcessNotFoundError(f"process {pid if pid is not None else repr(tag)[:80]} not found")

    async def running(self, rec: SandboxRecord) -> list[ProcessInfo]:
        ns = await self._ns(rec)
        return [info for info in await self.ctx.runtime.list_processes(ns) if info.running]

    async def write_stdin(self, ns: NamespaceRef, pid: int, data: bytes) -> None:
        await self.ctx.runtime.write_stdin(ns, pid, data)

    async def close_stdin(self, ns: NamespaceRef, pid: int) -> None:
        await self.ctx.runtime.close_stdin(ns, pid)

    async def signal(self, ns: NamespaceRef, pid: int, signum: int) -> None:
        await self.ctx.runtime.signal_process(ns, pid, signum)

    async def resize(self, ns: NamespaceRef, pid: int, size: PtySize) -> None:
        await self.ctx.runtime.resize_pty(ns, pid, size)

    async def aclose(self) -> None:
        for watcher in list(self._watchers):
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
