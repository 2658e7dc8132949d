"""Exec streams into a sandbox pod: the warm channel (one agent session) and a fresh one-shot exec.

Websocket frames carry one channel byte (0 stdin, 1 stdout, 2 stderr, 3 status) and bytes.
The agent's frames ride on stdin/stdout; its stderr is only logged. A fresh exec cannot
half-close stdin, so the shell is told how many bytes to read (``head -c N``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, cast

import aiohttp

from trove_api.logs import detached_task
from trove_api.runtimes.channel.session import AgentSession
from trove_api.runtimes.kubernetes.kubeapi import KubeApi
from trove_core.errors import AgentMissingError, UnavailableError
from trove_core.runtime import ExecOutput, ExecSpec

log = logging.getLogger(__name__)

# -I: no PYTHON* variables, no user site-packages, no script directory on the path. Commands can
# write $HOME/.local; a .pth file there must never run inside the agent when it restarts.
AGENT_COMMAND = ("python3", "-I", "/usr/local/lib/trove/agent.py", "/workspace")
HELLO_TIMEOUT_S = 10.0
STDIN, STDOUT, STDERR, STATUS = 0, 1, 2, 3


class WarmChannel:
    """One long-lived exec session running trove-agent in one pod."""

    def __init__(self, pod: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.pod = pod
        self.ws = ws
        self._send_lock = asyncio.Lock()
        # A stream that breaks the protocol closes the websocket: the runtime reconnects.
        self.session = AgentSession(self._send, prefix=bytes([STDIN]), abort=self._abort)
        self.status: dict[str, Any] | None = None
        self._reader = detached_task(self._read(), name=f"trove-channel-{pod}")

    @classmethod
    async def connect(cls, api: KubeApi, pod: str) -> WarmChannel:
        ws = await api.exec_ws(pod, AGENT_COMMAND)
        channel = cls(pod, ws)
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                await asyncio.shield(channel.session.hello)
        except (TimeoutError, UnavailableError) as exc:
            status = channel.status
            await channel.close()
            if status is not None and status.get("status") == "Failure":
                raise AgentMissingError(
                    f"trove-agent did not start in {pod}: {status.get('message')}"
                ) from exc
            raise UnavailableError(
                "The sandbox agent did not answer; retry",
                retry_after=2,
                internal=f"trove-agent did not answer in pod {pod}",
            ) from exc
        return channel

    def _abort(self) -> None:
        detached_task(self.ws.close(), name=f"trove-channel-close-{self.pod}")

    @property
    def open(self) -> bool:
        return not self.session.closed

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        # One writer at a time: websocket frames must not interleave, and aiohttp allows one drain waiter.
        async with self._send_lock:
            try:
                # The session put the stdin channel byte first. aiohttp takes any bytes-like
                # object (it copies to mask), though its annotation says bytes.
                await self.ws.send_bytes(cast(bytes, data))
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
                self.session.connection_lost()
                raise UnavailableError(
                    "The exec session to the sandbox dropped; retry",
                    retry_after=1,
                    internal=f"the exec session to {self.pod} dropped",
                ) from exc

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                    continue
                data: bytes = message.data
                channel = data[0]
                if channel == STDOUT:
                    self.session.feed(memoryview(data)[1:])
                elif channel == STDERR:
                    log.warning("trove-agent in %s: %s", self.pod, data[1:].decode(errors="replace").rstrip())
                elif channel == STATUS:
                    with contextlib.suppress(ValueError):
                        self.status = json.loads(data[1:])
        except Exception:  # a dropped connection must never go unnoticed by waiters
            log.exception("warm channel reader for %s failed", self.pod)
        finally:
            self.session.connection_lost()

    async def close(self) -> None:
        self.session.connection_lost()
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


def fresh_command(spec: ExecSpec) -> list[str]:
    """``sh`` that reads exactly the stdin bytes sent, then runs the script under a hard timeout."""
    seconds = max(1, int(spec.timeout_s + 0.999))
    if spec.stdin is None:
        feed = f'timeout -s KILL {seconds} "$@" </dev/null'
    else:
        feed = f'head -c {len(spec.stdin)} | timeout -s KILL {seconds} "$@"'
    wrapper = f"cd / && {feed}"
    # The pod's process cap (as the agent sets it), on the script's own line.
    capped = f'[ -z "$TROVE_MAX_PROCESSES" ] || ulimit -u "$TROVE_MAX_PROCESSES" || exit 125; {spec.script}'
    return ["/bin/sh", "-c", wrapper, "trove-exec", "/bin/bash", "--noprofile", "--norc", "-c", capped]


async def fresh_exec(api: KubeApi, pod: str, spec: ExecSpec) -> ExecOutput:
    """The fallback when the agent is unavailable: one exec stream per command (~46 ms)."""
    started = time.monotonic()
    ws = await api.exec_ws(pod, fresh_command(spec))
    out, err = bytearray(), bytearray()
    cut = {STDOUT: False, STDERR: False}
    status: dict[str, Any] = {}
    try:
        if spec.stdin:
            await ws.send_bytes(b"\x00" + spec.stdin)
        async with asyncio.timeout(spec.timeout_s + 5):
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                    continue
                channel, payload = message.data[0], message.data[1:]
                if channel in (STDOUT, STDERR):
                    buffer = out if channel == STDOUT else err
                    room = spec.output_limit - len(buffer)
                    buffer += payload[: max(0, room)]
                    cut[channel] = cut[channel] or len(payload) > room
                elif channel == STATUS:
                    with contextlib.suppress(ValueError):
                        status = json.loads(payload)
    except TimeoutError:
        pass
    finally:
        await ws.close()
    duration = time.monotonic() - started
    exit_code = _exit_code(status)
    timed_out = exit_code == 137 and duration >= spec.timeout_s
    return ExecOutput(
        exit_code=exit_code,
        stdout=bytes(out),
        stderr=bytes(err),
        stdout_truncated=cut[STDOUT],
        stderr_truncated=cut[STDERR],
        timed_out=timed_out,
        duration_ms=int(duration * 1000),
    )


def _exit_code(status: dict[str, Any]) -> int:
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            with contextlib.suppress(ValueError):
                return int(cause.get("message", "1"))
    return 1 if status else 137
