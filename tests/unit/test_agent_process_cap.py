"""trove-agent caps its commands' processes (RLIMIT_NPROC from the pod's TROVE_MAX_PROCESSES).

Hostile: a bounded fork bomb runs under an unprivileged uid of its own (as a sandbox pod does;
root is exempt from RLIMIT_NPROC), hits the cap, and the exec still answers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from tests.unit.test_agent import AGENT, agent
from trove_api.runtimes.channel.session import AgentSession
from trove_core.runtime import ExecSpec

SETPRIV = shutil.which("setpriv")
# A uid nothing else on the machine runs as: RLIMIT_NPROC counts all of a uid's processes.
UID = 1_900_000_000 + secrets.randbelow(1_000_000)
CAP = 64

# Fork up to 2000 sleepers; report how many started before the kernel said EAGAIN.
FORK_BOMB = """python3 - <<'PY'
import os, time
started = 0
try:
    for _ in range(2000):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        started += 1
except BlockingIOError:
    print("EAGAIN after", started)
else:
    print("no limit:", started)
PY"""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None or sys.platform != "linux",
    reason="needs root and setpriv to run the agent as a uid of its own",
)


@contextmanager
def sandbox_root() -> Iterator[tuple[Path, Path]]:
    """A workspace and a copy of the agent that the unprivileged uid can reach."""
    top = Path(tempfile.mkdtemp(prefix="trove-nproc-"))
    try:
        workspace = top / "workspace"
        workspace.mkdir()
        os.chown(workspace, UID, UID)
        script = top / "trove_agent.py"
        shutil.copy(AGENT, script)
        top.chmod(0o755)
        script.chmod(0o644)
        yield workspace, script
    finally:
        subprocess.run(["pkill", "-KILL", "-U", str(UID)], check=False)
        shutil.rmtree(top, ignore_errors=True)


@asynccontextmanager
async def capped_agent(env: dict[str, str]) -> AsyncIterator[AgentSession]:
    with sandbox_root() as (workspace, script):
        assert SETPRIV is not None
        # The system interpreter: the unprivileged uid cannot read the test venv.
        drop = [SETPRIV, f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]
        async with agent(
            workspace,
            wrapper=drop,
            python="/usr/bin/python3",
            script=script,
            env={"PATH": "/usr/bin:/bin", **env},
        ) as session:
            yield session


def spec(script: str) -> ExecSpec:
    return ExecSpec(script=script, stdin=None, timeout_s=20, output_limit=1 << 16)


async def test_a_fork_bomb_stops_at_the_cap_and_the_exec_answers() -> None:
    async with capped_agent({"TROVE_MAX_PROCESSES": str(CAP)}) as session:
        out = await session.exec(spec(FORK_BOMB), 1 << 20)
        assert out.exit_code == 0, out.stderr
        words = out.stdout.decode().split()
        assert words[:2] == ["EAGAIN", "after"], out.stdout
        assert 0 < int(words[2]) < CAP
        # The bomb's sleepers died with its exec: the next command forks freely.
        after = await session.exec(spec("for i in 1 2 3; do /bin/true & done; wait; echo ok"), 1 << 20)
        assert after.stdout == b"ok\n"
        limit = await session.exec(spec("ulimit -u; ulimit -u 100000 || echo cannot-raise"), 1 << 20)
        assert limit.stdout.split() == [str(CAP).encode(), b"cannot-raise"]


async def test_no_cap_without_the_setting() -> None:
    async with capped_agent({}) as session:
        out = await session.exec(spec("ulimit -u"), 1 << 20)
        assert out.stdout.strip() != str(CAP).encode()
