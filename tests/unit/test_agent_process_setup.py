"""What a process started by ``proc_start`` is, before its first instruction: the same limits
as an exec, the signals a shell expects, a death tied to the agent's, its orphans kept below it,
and (on a PTY) a controlling terminal.

How the agent spawns these is the hot path of every E2B command, so it is a likely place for a
faster spawn to drop one of them: each is read here from inside the process itself.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from tests.unit.test_agent import agent
from tests.unit.test_agent_processes import to_end
from trove_api.runtimes.agent import trove_agent
from trove_api.runtimes.channel.processes import ProcessClient, ProcessLimits
from trove_core.runtime import ProcessSpec, PtySize

FILE_BYTES = 3 * 1024 * 1024
CAP = 77
# Read from inside: prctl's GET options answer only for the caller.
SELF_REPORT = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
value = ctypes.c_int()
libc.prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
pdeathsig = value.value
libc.prctl(37, ctypes.byref(value), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
try:
    terminal = os.tcgetpgrp(0) == os.getpgrp()
except OSError:
    terminal = False
print(pdeathsig, value.value, os.getsid(0) == os.getpid(), terminal)
"""


def limits_of(report: str) -> dict[str, list[str]]:
    """``/proc/self/limits`` as {name: [soft, hard]}."""
    rows = {}
    for line in report.splitlines()[1:]:
        name, values = line[:26].strip(), line[26:].split()
        rows[name] = values[:2]
    return rows


def ignored_signals(status: str) -> int:
    """The ``SigIgn`` mask of ``/proc/<pid>/status``."""
    return next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigIgn:"))


async def test_a_started_process_has_the_limits_of_an_exec(tmp_path: Path) -> None:
    """Soft and hard alike, so the process cannot lift them; SIGPIPE and SIGXFSZ at their
    defaults (Python, which the agent is, ignores both, and exec keeps what is ignored)."""
    env = {**os.environ, trove_agent.MAX_PROCESSES_ENV: str(CAP)}
    async with agent(tmp_path, env=env) as session:
        procs = ProcessClient(session)
        limits = ProcessLimits(file_bytes=FILE_BYTES)
        info = await procs.start(ProcessSpec(argv=("cat", "/proc/self/limits")), limits)
        out, end = await to_end(procs.output(info.pid))
        assert end.exit_code == 0
        rows = limits_of(out.decode())
        info = await procs.start(ProcessSpec(argv=("cat", "/proc/self/status")), limits)
        status, end = await to_end(procs.output(info.pid))
        assert end.exit_code == 0
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):
            assert not ignored_signals(status.decode()) & (1 << (signum - 1)), signum.name
        assert rows["Max file size"] == [str(FILE_BYTES)] * 2
        assert rows["Max processes"] == [str(CAP)] * 2
        # As a shell sees it: a write past the limit kills the writer (SIGXFSZ), and no file grows past it.
        info = await procs.start(
            ProcessSpec(argv=("bash", "-c", f"head -c {FILE_BYTES + 4096} /dev/zero > big")), limits
        )
        _, end = await to_end(procs.output(info.pid))
        assert end.exit_code != 0
        assert (tmp_path / "big").stat().st_size <= FILE_BYTES


async def test_a_started_process_dies_with_the_agent_and_keeps_its_orphans(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG (SIGKILL) and PR_SET_CHILD_SUBREAPER, set on the process itself; a
    session of its own; a PTY is its controlling terminal, a pipe is not."""
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        for pty, terminal in ((None, "False"), (PtySize(24, 80), "True")):
            spec = ProcessSpec(argv=(sys.executable, "-I", "-c", SELF_REPORT), pty=pty)
            info = await procs.start(spec, ProcessLimits())
            out, end = await to_end(procs.output(info.pid))
            assert end.exit_code == 0, out
            assert out.decode().split() == [str(int(signal.SIGKILL)), "1", "True", terminal]
