"""Terminal sessions: an interactive shell on a PTY in a namespace's sandbox, for the dashboard.

Opened as the signed-in key (the namespace resolved as ``X-Namespace`` is: a locked key reaches
only its own; namespaces live inside the key's workspace), announced as ``terminal.opened`` and
``terminal.closed``. Closing hangs the shell up (SIGHUP, as a terminal closing does) and kills
what is left of its process group if it has not gone after ``HANGUP_GRACE_S``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from trove_api.events import types
from trove_api.services.auth import Caller, resolve_namespace
from trove_api.services.events import EventEmitter, EventFeedService, scope_for
from trove_api.services.namespaces import NamespaceService
from trove_core.errors import InvalidRequestError, TroveError
from trove_core.runtime import NamespaceRef, ProcessEnd, ProcessOutput, ProcessSpec, PtySize, Runtime

# Where every exec runs: in the directory that holds ``workspace/`` (the namespace root, the
# sandbox's HOME, shown as ``workspace/``), with init.sh sourced first: here as the shell's rc
# file (a missing one is skipped without a word), so its ``cd``s and venvs apply as they do to
# an exec. A process's cwd is namespace-relative and cannot name that directory: hence the cd.
SHELL_ARGV = ("bash", "-c", 'cd "$HOME/.." && exec bash --rcfile workspace/.trove/init.sh -i')
SHELL_ENV = {"TERM": "xterm-256color", "COLORTERM": "truecolor", "PS1": r"\w\$ "}
TAG = "dashboard-terminal"
HANGUP_GRACE_S = 2.0
CLOSE_LIMIT_S = 3 * HANGUP_GRACE_S  # the signals' round trips included
MAX_ROWS = 500
MAX_COLS = 1000


def pty_size(rows: int, cols: int) -> PtySize:
    if not (1 <= rows <= MAX_ROWS and 1 <= cols <= MAX_COLS):
        raise InvalidRequestError(f"A terminal is 1-{MAX_ROWS} rows by 1-{MAX_COLS} columns")
    return PtySize(rows=rows, cols=cols)


@dataclass
class TerminalSession:
    caller: Caller
    namespace: str
    ref: NamespaceRef
    pid: int
    started: float


class TerminalService:
    def __init__(
        self, runtime: Runtime, namespaces: NamespaceService, emitter: EventEmitter, feed: EventFeedService
    ) -> None:
        self.runtime = runtime
        self.namespaces = namespaces
        self.emitter = emitter
        self.feed = feed

    async def open(self, caller: Caller, namespace: str, size: PtySize) -> TerminalSession:
        namespace = resolve_namespace(caller, namespace)
        ref = await self.namespaces.ensure(caller.workspace_id, namespace, caller.actor)
        spec = ProcessSpec(argv=SHELL_ARGV, env=SHELL_ENV, pty=size, tag=TAG)
        info = await self.runtime.start_process(ref, spec)
        session = TerminalSession(caller, namespace, ref, info.pid, time.monotonic())
        await self.emitter.emit(
            workspace_id=caller.workspace_id,
            namespace=namespace,
            type_=types.TERMINAL_OPENED,
            actor=caller.actor,
            data={"pid": info.pid, "rows": size.rows, "cols": size.cols},
        )
        return session

    def output(self, session: TerminalSession) -> AsyncIterator[ProcessOutput | ProcessEnd]:
        """The PTY's output from its start; the runtime keeps a bounded window, so a reader that
        falls behind gets ``dropped`` counts instead of making anything buffer without bound."""
        return self.runtime.process_output(session.ref, session.pid, 0)

    async def until_revoked(self, session: TerminalSession) -> None:
        """Returns once the key that opened the terminal is revoked (or the server stops): the
        same watch that ends its SSE streams, so a revoked key keeps no shell."""
        scope = scope_for(session.caller, namespace=session.namespace, types=types.KEY_REVOKED)
        # Cancelled at the stream's own await, so its hub subscription is left there and then.
        async for _ in self.feed.stream(scope, after=None, key_id=session.caller.key_id):
            pass

    async def write(self, session: TerminalSession, data: bytes) -> None:
        await self.runtime.write_stdin(session.ref, session.pid, data)

    async def resize(self, session: TerminalSession, size: PtySize) -> None:
        await self.runtime.resize_pty(session.ref, session.pid, size)

    async def close(self, session: TerminalSession) -> None:
        """Hang up, then kill; always ends with ``terminal.closed`` (exit code ``None`` if the
        sandbox could not say)."""
        exit_code: int | None = None
        try:
            # Bounded as a whole: a sandbox that stops answering (its pod busy or going away)
            # must not keep the close, and so terminal.closed, waiting.
            async with asyncio.timeout(CLOSE_LIMIT_S):
                exit_code = await self._hang_up(session)
        except (TroveError, TimeoutError):
            pass  # the sandbox went away (stopped, died) or did not answer: the shell goes with it
        finally:
            await self.emitter.emit(
                workspace_id=session.caller.workspace_id,
                namespace=session.namespace,
                type_=types.TERMINAL_CLOSED,
                actor=session.caller.actor,
                data={
                    "pid": session.pid,
                    "exit_code": exit_code,
                    "duration_ms": int((time.monotonic() - session.started) * 1000),
                },
            )

    async def _hang_up(self, session: TerminalSession) -> int | None:
        """SIGHUP, then SIGKILL if the shell is still there after ``HANGUP_GRACE_S``; its exit code."""
        await self.runtime.signal_process(session.ref, session.pid, signal.SIGHUP)
        try:
            async with asyncio.timeout(HANGUP_GRACE_S):
                return await self.runtime.wait_process(session.ref, session.pid)
        except TimeoutError:
            await self.runtime.signal_process(session.ref, session.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HANGUP_GRACE_S):
                    return await self.runtime.wait_process(session.ref, session.pid)
        return None
