"""One warm local sandbox: trove-agent behind the spawn chain, its stdin/stdout the channel.

The process the server spawns is the outer end of the chain (``sh`` joining the cgroups, then
``nsenter``, ``setpriv`` and ``bwrap`` each exec'ing the next), so by the time the agent says
HELLO it *is* bubblewrap. bubblewrap's child is pid 1 of the sandbox's pid namespace; killing it
makes the kernel kill everything else in the namespace, and bwrap exits once it is reaped, so
``stop`` returns only when no process of the sandbox is left. The agent's stderr goes to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from trove_api.logs import detached_task
from trove_api.runtimes.channel.fds import FdChannel, new_pair
from trove_api.runtimes.channel.session import AgentSession
from trove_core.errors import ChannelLostError, UnavailableError

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
# The agent's end of the descriptor socket is inherited at or above this number, clear of the
# fds the spawn chain opens for bwrap (3-5).
_FD_SOCKET_MIN = 64
_STOP_WAIT_S = 5.0
_STDERR_KEPT = 4096


class AgentSandbox:
    """A running sandbox and the ``AgentSession`` over its pipes."""

    def __init__(
        self,
        key: str,
        proc: asyncio.subprocess.Process,
        *,
        contained: bool,
        on_stop: Callable[[], None] | None = None,
        healthy: Callable[[], bool] | None = None,
    ) -> None:
        self.key = key
        self._healthy = healthy
        self.proc = proc
        # A pid namespace holds everything it started (bwrap); unsandboxed, only the agent is ours.
        self.contained = contained
        self._on_stop = on_stop
        assert proc.stdin is not None
        assert proc.stderr is not None
        self._stdin = proc.stdin
        self.session = AgentSession(self._send)
        self.last_used = time.monotonic()
        self._stderr_tail = b""
        # Set when the agent's end of the channel closes (``_ChannelReader``).
        self._channel_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._channel: asyncio.BaseTransport | None = None
        self._channel_file: io.FileIO | None = None
        self._fd_socket: socket.socket | None = None  # the API's end until the session takes it
        self._errors = detached_task(self._log_stderr(proc.stderr), name=f"trove-sandbox-log-{key}")
        self._stopping: asyncio.Future[None] | None = None  # set once stop() is called

    @classmethod
    async def start(
        cls,
        key: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        contained: bool = True,
        on_stop: Callable[[], None] | None = None,
        healthy: Callable[[], bool] | None = None,
        fd_device: int | None = None,
    ) -> AgentSandbox:
        """Spawn ``argv`` (which ends in the agent) and wait for its HELLO.

        ``fd_device``: st_dev of the namespace's directory; given, the agent also gets a unix
        socket (``--fds=N``) to hand file descriptors over (``channel/fds.py``), and the API
        takes only regular files on that device from it."""
        # The agent's stdout is read by a protocol that hands each read straight to the session:
        # a StreamReader in between copied every byte twice more and shifted its buffer per read.
        channel_out, agent_out = os.pipe2(os.O_CLOEXEC)
        fd_api, fd_agent = new_pair() if fd_device is not None else (None, None)
        agent_fds = -1
        if fd_agent is not None:
            agent_fds = fcntl.fcntl(fd_agent.fileno(), fcntl.F_DUPFD_CLOEXEC, _FD_SOCKET_MIN)
            fd_agent.close()
            argv = [*argv, f"--fds={agent_fds}"]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=agent_out,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env=dict(env),
                cwd=cwd,
                pass_fds=(agent_fds,) if agent_fds >= 0 else (),
            )
        except BaseException as exc:  # OSError, or cancelled (asyncio reaps what it spawned)
            os.close(channel_out)
            if fd_api is not None:
                fd_api.close()
            if on_stop is not None:
                on_stop()
            if not isinstance(exc, OSError):
                raise
            raise UnavailableError(
                "The sandbox could not be started; retry", retry_after=2, internal=f"spawning {key}: {exc}"
            ) from exc
        finally:
            os.close(agent_out)
            if agent_fds >= 0:
                os.close(agent_fds)
        sandbox = cls(key, proc, contained=contained, on_stop=on_stop, healthy=healthy)
        sandbox._fd_socket = fd_api  # closed by stop() unless the hello hands it to the session
        # Held here too: the transport closes its pipe only from a loop callback, which never
        # runs when the loop ends first; stop() closes it itself.
        sandbox._channel_file = os.fdopen(channel_out, "rb", buffering=0)
        try:
            sandbox._channel, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: _ChannelReader(sandbox), sandbox._channel_file
            )
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                hello = await asyncio.shield(sandbox.session.hello)
        except (TimeoutError, ChannelLostError) as exc:
            await sandbox._stop_unstarted()
            await _settled(sandbox._errors)
            said = sandbox._stderr_tail.decode(errors="replace").strip()
            raise UnavailableError(
                "The sandbox did not start; retry",
                retry_after=2,
                internal=f"the sandbox of {key} did not say hello: {said or 'no output'}",
            ) from exc
        except BaseException:
            # Cancelled (a pause or kill stops the E2B warm-up; a shutdown ends what runs): no
            # one else knows this sandbox, and its process and pipes would outlive the loop.
            await sandbox._stop_unstarted()
            raise
        if fd_api is not None and fd_device is not None and hello.get("fds") is True:
            sandbox.session.fds = FdChannel(fd_api, fd_device)  # it owns the socket from now
            sandbox._fd_socket = None
        return sandbox

    async def _stop_unstarted(self) -> None:
        try:
            await self.stop()
        finally:
            hello = self.session.hello
            if hello.done() and not hello.cancelled():
                hello.exception()  # retrieved: stop() failed it, and no one waits for it any more

    @property
    def alive(self) -> bool:
        """The agent answers, and what the sandbox depends on outside it (its network) still runs."""
        return not self.session.closed and (self._healthy is None or self._healthy())

    @property
    def busy(self) -> bool:
        return bool(self.session.requests)

    def touch(self) -> None:
        self.last_used = time.monotonic()

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        # One whole frame per write(): frames never interleave, so no lock is needed.
        try:
            self._stdin.write(data)
            await self._stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self.session.connection_lost()
            raise ChannelLostError("The sandbox's agent stopped; retry the call") from exc

    def _channel_closed(self) -> None:
        self.session.connection_lost()
        if self._stopping is None:
            log.warning("the sandbox agent of %s exited (code %s)", self.key, self.proc.returncode)
        if not self._channel_done.done():
            self._channel_done.set_result(None)

    async def _log_stderr(self, stderr: asyncio.StreamReader) -> None:
        while line := await stderr.readline():
            self._stderr_tail = (self._stderr_tail + line)[-_STDERR_KEPT:]
            log.warning("trove-agent of %s: %s", self.key, line.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        """Kill the sandbox and everything in it; idempotent. A caller cancelled meanwhile does
        not cut the stop short (its processes, pipes and descriptor socket would outlive it, and
        warn when collected): the stop goes on, and a later call waits for that same stop."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())  # runs from the next await on
            self.session.connection_lost()
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        try:
            await self._kill()
        finally:  # even cancelled (the loop ending under it): nothing of the sandbox stays open
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            self._release()
            if self._on_stop is not None:
                on_stop, self._on_stop = self._on_stop, None
                await asyncio.to_thread(on_stop)

    async def _kill(self) -> None:
        pid = self.proc.pid
        if self.proc.returncode is None:
            if self.contained:
                # The sandbox's pid 1 first: bwrap then exits only after the kernel has reaped
                # the whole pid namespace, so waiting for bwrap waits for all of it.
                for child in _children(pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(child, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_STOP_WAIT_S):
                        await self.proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            await self.proc.wait()
        with contextlib.suppress(Exception):
            self._stdin.close()
        for waited in (self._channel_done, self._errors):
            await _settled(waited, _STOP_WAIT_S)

    def _release(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._channel_file is not None:
            self._channel_file.close()
        if self.session.fds is not None:
            self.session.fds.close()
        if self._fd_socket is not None:
            self._fd_socket.close()
            self._fd_socket = None


class _ChannelReader(asyncio.Protocol):
    """The agent's stdout, fed to the session as it is read."""

    def __init__(self, sandbox: AgentSandbox) -> None:
        self._sandbox = sandbox

    def data_received(self, data: bytes) -> None:
        try:
            self._sandbox.session.feed(data)
        except Exception:  # a broken channel must never go unnoticed by waiters
            log.exception("reading the sandbox channel of %s failed", self._sandbox.key)
            self._sandbox.session.broken("the channel could not be read")

    def eof_received(self) -> bool:
        return False  # the transport closes, and connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._sandbox._channel_closed()


async def _settled(waited: asyncio.Future[None], timeout_s: float | None = None) -> None:
    """Until ``waited`` is done (or ``timeout_s`` passes), whatever it ended with. Unlike
    awaiting it under ``suppress(CancelledError)``, a cancellation of the caller still ends the
    caller."""
    await asyncio.wait({waited}, timeout=timeout_s)
    if waited.done() and not waited.cancelled():
        waited.exception()  # retrieved: what it raised was logged where it happened


def _children(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                children += [int(p) for p in f.read().split()]
    return children
