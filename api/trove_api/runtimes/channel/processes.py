"""Processes that outlive a call, over an ``AgentSession``: the client half of the agent's ``proc_*`` ops.

Output is paced like an export: the agent sends at most a window of unacknowledged bytes per
reader, so a slow reader holds the API to a window and the agent to its per-process ring
(older bytes are dropped there, and the next frame's cursor says how many).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from trove_api.runtimes.channel.protocol import DATA, EOF, agent_error, paced_frames, reply
from trove_api.runtimes.channel.session import AgentSession
from trove_core.errors import TroveError
from trove_core.runtime import NamespaceRef, ProcessEnd, ProcessInfo, ProcessOutput, ProcessSpec, PtySize
from trove_core.settings import Settings

OUTPUT = struct.Struct(">QB")  # the agent's proc_output DATA header: cursor, stream
STREAMS: dict[int, Literal["stdout", "stderr", "pty"]] = {1: "stdout", 2: "stderr", 3: "pty"}
WINDOW = 256 * 1024
ACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class ProcessLimits:
    """Sent with each start: the agent enforces them per sandbox (= per namespace)."""

    max_running: int = 16
    buffer_bytes: int = 1024 * 1024
    file_bytes: int = 100 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessLimits:
        return cls(
            max_running=settings.process_max,
            buffer_bytes=settings.process_buffer_kb * 1024,
            file_bytes=settings.exec_file_mb * 1024 * 1024,
        )


def _output_bytes(payload: bytes) -> int:
    """What the agent counts of a proc_output frame: its output, not the header before it."""
    return len(payload) - OUTPUT.size


def _info(body: dict[str, Any]) -> ProcessInfo:
    pty = body.get("pty")
    return ProcessInfo(
        pid=int(body["pid"]),
        argv=tuple(str(a) for a in body["argv"]),
        env={str(k): str(v) for k, v in dict(body.get("env") or {}).items()},
        tag=None if body.get("tag") is None else str(body["tag"]),
        cwd=str(body.get("cwd", "")),
        pty=PtySize(int(pty[0]), int(pty[1])) if pty else None,
        stdin=bool(body.get("stdin")),
        running=bool(body["running"]),
        exit_code=None if body.get("exit_code") is None else int(body["exit_code"]),
        cursor=int(body.get("cursor", 0)),
    )


class ProcessClient:
    """The ``proc_*`` ops of one session. ``session.live_processes`` follows what they report,
    so the session's owner knows not to close a channel whose sandbox still runs something."""

    def __init__(self, session: AgentSession) -> None:
        self.session = session

    def _seen(self, info: ProcessInfo) -> ProcessInfo:
        if info.running:
            self.session.live_processes.add(info.pid)
        else:
            self.session.live_processes.discard(info.pid)
        return info

    async def start(self, spec: ProcessSpec, limits: ProcessLimits) -> ProcessInfo:
        body = await self.session.call(
            {
                "op": "proc_start",
                "argv": list(spec.argv),
                "env": dict(spec.env),
                "cwd": spec.cwd,
                "pty": [spec.pty.rows, spec.pty.cols] if spec.pty else None,
                "tag": spec.tag,
                "stdin": spec.stdin,
                "max_processes": limits.max_running,
                "buffer_bytes": limits.buffer_bytes,
                "file_bytes": limits.file_bytes,
            }
        )
        return self._seen(_info(body))

    async def list(self) -> list[ProcessInfo]:
        body = await self.session.call({"op": "proc_list"})
        infos = [_info(p) for p in body["processes"]]
        self.session.live_processes = {info.pid for info in infos if info.running}
        return infos

    async def output(
        self, pid: int, cursor: int = 0, hold: bool = False
    ) -> AsyncIterator[ProcessOutput | ProcessEnd]:
        request = await self.session.open(
            {"op": "proc_output", "pid": pid, "cursor": cursor, "window": WINDOW, "hold": hold}
        )
        async with contextlib.aclosing(paced_frames(request, ACK_BYTES, _output_bytes)) as frames:
            async for kind, payload in frames:
                if kind == DATA:
                    start, stream = OUTPUT.unpack_from(payload)
                    data = payload[OUTPUT.size :]
                    yield ProcessOutput(STREAMS.get(stream, "stdout"), data, start, max(0, start - cursor))
                    cursor = start + len(data)
                else:
                    result = reply(payload)
                    if not result.get("ok"):
                        raise agent_error(result)
                    self.session.live_processes.discard(pid)
                    end = int(result["cursor"])
                    yield ProcessEnd(int(result["exit_code"]), end, max(0, end - cursor))
                    return

    async def write_stdin(self, pid: int, data: bytes) -> None:
        request = await self.session.open({"op": "proc_stdin", "pid": pid})
        try:
            await request.send_data(data)
            await request.send(EOF)
            result = await request.result()
        except BaseException:
            await request.abandon()
            raise
        finally:
            request.close()
        if not result.get("ok"):
            raise agent_error(result)

    async def close_stdin(self, pid: int) -> None:
        await self.session.call({"op": "proc_close_stdin", "pid": pid})

    async def resize(self, pid: int, size: PtySize) -> None:
        await self.session.call({"op": "proc_resize", "pid": pid, "rows": size.rows, "cols": size.cols})

    async def signal(self, pid: int, signum: int) -> None:
        await self.session.call({"op": "proc_signal", "pid": pid, "signal": signum})

    async def wait(self, pid: int) -> int:
        request = await self.session.open({"op": "proc_wait", "pid": pid})
        try:
            result = await request.result()
        except BaseException:
            await request.abandon()
            raise
        finally:
            request.close()
        if not result.get("ok"):
            raise agent_error(result)
        self.session.live_processes.discard(pid)
        return int(result["exit_code"])

    async def running(self) -> bool:
        """Whether the sandbox still runs a process started here (asks the agent if it may)."""
        if self.session.live_processes and not self.session.closed:
            with contextlib.suppress(TroveError):
                await self.list()
        return bool(self.session.live_processes) and not self.session.closed


class AgentProcesses:
    """The Runtime's process methods for a backend whose sandboxes run trove-agent: each one is
    the ``ProcessClient`` call on the namespace's session. Both runtimes inherit it; they give
    ``_session`` (their warm channel to the namespace's agent) and ``process_limits``."""

    process_limits: ProcessLimits

    async def _session(self, ns: NamespaceRef) -> AgentSession:
        raise NotImplementedError

    async def _processes(self, ns: NamespaceRef) -> ProcessClient:
        return ProcessClient(await self._session(ns))

    async def start_process(self, ns: NamespaceRef, spec: ProcessSpec) -> ProcessInfo:
        return await (await self._processes(ns)).start(spec, self.process_limits)

    async def process_output(
        self, ns: NamespaceRef, pid: int, cursor: int = 0, hold: bool = False
    ) -> AsyncIterator[ProcessOutput | ProcessEnd]:
        async for item in (await self._processes(ns)).output(pid, cursor, hold):
            yield item

    async def write_stdin(self, ns: NamespaceRef, pid: int, data: bytes) -> None:
        await (await self._processes(ns)).write_stdin(pid, data)

    async def close_stdin(self, ns: NamespaceRef, pid: int) -> None:
        await (await self._processes(ns)).close_stdin(pid)

    async def resize_pty(self, ns: NamespaceRef, pid: int, size: PtySize) -> None:
        await (await self._processes(ns)).resize(pid, size)

    async def signal_process(self, ns: NamespaceRef, pid: int, signum: int) -> None:
        await (await self._processes(ns)).signal(pid, signum)

    async def wait_process(self, ns: NamespaceRef, pid: int) -> int:
        return await (await self._processes(ns)).wait(pid)

    async def list_processes(self, ns: NamespaceRef) -> list[ProcessInfo]:
        return await (await self._processes(ns)).list()
