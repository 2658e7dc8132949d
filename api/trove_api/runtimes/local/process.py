"""Spawn one sandboxed command, feed its stdin, capture capped output, enforce the wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence

from trove_core.runtime import ExecOutput

_CHUNK = 64 * 1024
# After the spawned process exits, how long its pipes may stay open (held by stragglers
# in an unsandboxed run) before we stop reading.
_DRAIN_GRACE_S = 2.0


class _Capture:
    """Keeps the first ``limit`` bytes of a stream and drains (discards) the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.truncated = False

    async def consume(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_CHUNK):
            room = self.limit - len(self.buffer)
            if room > 0:
                self.buffer += chunk[:room]
            if len(chunk) > room:
                self.truncated = True


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.close()
        await stdin.wait_closed()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_captured(
    argv: Sequence[str],
    *,
    stdin: bytes | None,
    timeout_s: float,
    output_limit: int,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    kill_group_on_exit: bool = False,
) -> ExecOutput:
    """Run ``argv`` in a new session; on timeout kill its whole process group.

    ``kill_group_on_exit`` also kills the group after a normal exit, for unsandboxed runs whose
    background children would otherwise survive (a sandbox's pid namespace dies with it).
    """
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = _Capture(output_limit), _Capture(output_limit)
    tasks = [
        asyncio.create_task(out.consume(proc.stdout)),
        asyncio.create_task(err.consume(proc.stderr)),
    ]
    if stdin is not None:
        assert proc.stdin is not None
        tasks.append(asyncio.create_task(_feed(proc.stdin, stdin)))
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
    finally:
        # Kill while the leader is still unreaped, so its pid (the group id) cannot have been
        # reused by an unrelated process.
        if proc.returncode is None:
            _kill_group(proc.pid)
            await proc.wait()
        elif kill_group_on_exit:
            _kill_group(proc.pid)
    _done, pending = await asyncio.wait(tasks, timeout=_DRAIN_GRACE_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    exit_code = returncode if returncode >= 0 else 128 - returncode
    return ExecOutput(
        exit_code=exit_code,
        stdout=bytes(out.buffer),
        stderr=bytes(err.buffer),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        timed_out=timed_out,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
