"""20 E2B terminals streaming at once: the API's CPU per MB streamed, and whether any stalls.

Each session is a ``pty.create`` bash that prints ``STREAM_BYTES`` of base64 and exits. The
baseline reads the same 20 commands from 20 local PTYs in one plain Python process: the CPU a
reader needs per MB without HTTP, Connect framing or an agent in between.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

from e2b import AsyncSandbox, PtySize

from bench.common import MB, Result, ServerProcess, cpu_seconds, header, ratio

NAME = "e2b_pty"
SESSIONS = 20
RAW_BYTES = 1_500_000  # base64 makes it 2 MB of text per session
COMMAND = f"head -c {RAW_BYTES} /dev/zero | base64 -w 100; echo __STREAM_''DONE__; exit"
MARKER = b"__STREAM_DONE__"
STALL_S = 1.0
# One sandbox runs all 20 terminals: more than the default 16 processes per namespace.
SERVER_ENV = {"TROVE_PROCESS_MAX": "32"}


@dataclass
class Session:
    received: int = 0
    first: float | None = None
    last: float | None = None
    max_gap: float = 0.0
    done: bool = False
    tail: bytes = field(default=b"")

    def add(self, chunk: bytes) -> None:
        now = time.perf_counter()
        if self.last is not None and not self.done:
            self.max_gap = max(self.max_gap, now - self.last)
        self.first = self.first or now
        self.last = now
        self.received += len(chunk)
        self.done = self.done or MARKER in self.tail + chunk
        self.tail = (self.tail + chunk)[-64:]


async def _stream(server: ServerProcess) -> tuple[list[Session], float, float]:
    sbx = await AsyncSandbox.create()
    try:
        sessions = [Session() for _ in range(SESSIONS)]
        handles = [
            await sbx.pty.create(PtySize(rows=24, cols=120), on_data=session.add) for session in sessions
        ]
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        await asyncio.gather(*(sbx.pty.send_stdin(h.pid, COMMAND.encode() + b"\n") for h in handles))
        await asyncio.gather(*(h.wait() for h in handles), return_exceptions=True)
        elapsed = time.perf_counter() - started
        return sessions, cpu_seconds(server.pid) - cpu_before, elapsed
    finally:
        await sbx.kill()


RAW_READER = r"""
import json, os, pty, resource, select, subprocess, sys, time
command, sessions = sys.argv[1], int(sys.argv[2])
fds, children = [], []
for _ in range(sessions):
    main, sub = pty.openpty()
    argv = ["bash", "-c", command]
    children.append(subprocess.Popen(argv, stdin=sub, stdout=sub, stderr=sub, close_fds=True))
    os.close(sub)
    fds.append(main)
received, open_fds = 0, set(fds)
while open_fds:
    ready, _, _ = select.select(list(open_fds), [], [])
    for fd in ready:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            open_fds.discard(fd)
            os.close(fd)
        received += len(chunk)
for child in children:
    child.wait()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"received": received, "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


def _raw() -> tuple[int, float]:
    done = subprocess.run(
        [sys.executable, "-c", RAW_READER, COMMAND.removesuffix("; exit"), str(SESSIONS)],
        check=True,
        capture_output=True,
    )
    figures = json.loads(done.stdout)
    return int(figures["received"]), float(figures["cpu_s"])


def run(server: ServerProcess) -> Result:
    header(f"{SESSIONS} e2b PTY sessions streaming {RAW_BYTES * 4 // 3 / MB:.1f} MB each at once")
    sessions, api_cpu_s, elapsed = asyncio.run(_stream(server))
    streamed = sum(s.received for s in sessions)
    raw_bytes, raw_cpu_s = _raw()
    per_mb = api_cpu_s / (streamed / MB) * 1000
    raw_per_mb = raw_cpu_s / (raw_bytes / MB) * 1000
    stalled = [i for i, s in enumerate(sessions) if not s.done or s.max_gap > STALL_S]
    result = Result(
        name=NAME,
        figure=(
            f"API CPU {per_mb:.1f} ms/MB over {streamed / MB:.1f} MB in {elapsed:.2f} s; "
            f"{len(stalled)} stalled; worst gap {max(s.max_gap for s in sessions) * 1000:.0f} ms"
        ),
        baseline=f"local PTY reader {raw_per_mb:.1f} ms CPU/MB over {raw_bytes / MB:.1f} MB",
        ratio=f"CPU/MB {ratio(per_mb, raw_per_mb):.1f}x",
        target=f"every session completes, no gap > {STALL_S:.0f} s",
        passed=not stalled,
        details={
            "sessions": SESSIONS,
            "streamed_bytes": streamed,
            "api_cpu_s": round(api_cpu_s, 3),
            "elapsed_s": round(elapsed, 3),
            "api_cpu_ms_per_mb": round(per_mb, 2),
            "raw_cpu_ms_per_mb": round(raw_per_mb, 2),
            "max_gap_ms": [round(s.max_gap * 1000, 1) for s in sessions],
            "stalled": stalled,
        },
    )
    result.show()
    return result
