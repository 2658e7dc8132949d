"""``proc_start`` spawns through a zygote forked ahead (``trove_agent.Zygotes``): the fork of
the agent is off the reply's way. What that adds must not be a way in or a way to stall: a
zygote a command stops or kills is replaced, the idle one dies with the agent, and a start
that cannot exec still says why.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.unit.test_agent import agent
from tests.unit.test_agent_processes import state, to_end
from trove_api.runtimes.channel.processes import ProcessClient, ProcessLimits
from trove_core.errors import ProcessStartFailedError
from trove_core.runtime import ProcessSpec

LIMITS = ProcessLimits()


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        found |= {int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
    return found


async def idle_zygote(agent_pid: int, started: set[int]) -> int:
    """The agent's child that is neither a started process nor a supervisor (poll: it is made
    just after a start's reply)."""
    for _ in range(2500):
        idle = [
            pid
            for pid in children(agent_pid) - started
            if state(pid) not in ("gone", "Z") and "trove_agent" in Path(f"/proc/{pid}/cmdline").read_text()
        ]
        supervisors = {pid for pid in idle if Path(f"/proc/{pid}/fd").exists() and _is_supervisor(pid)}
        if len(set(idle) - supervisors) == 1:
            return (set(idle) - supervisors).pop()
        await asyncio.sleep(0.002)
    raise AssertionError("no idle zygote")


def _is_supervisor(pid: int) -> bool:
    """A supervisor is a child subreaper waiting for calls; a zygote is one too, but in a session
    of its own (setsid) while a supervisor stays in the agent's."""
    return os.getsid(pid) != pid


async def run(procs: ProcessClient, script: str) -> tuple[bytes, int]:
    info = await procs.start(ProcessSpec(argv=("sh", "-c", script)), LIMITS)
    out, end = await to_end(procs.output(info.pid, 0))
    return out, end.exit_code


@pytest.mark.parametrize("signum", [signal.SIGSTOP, signal.SIGKILL])
async def test_a_zygote_a_command_stops_or_kills_is_replaced(tmp_path: Path, signum: int) -> None:
    """Commands run as the agent's uid: one may signal its idle sibling. The next start still
    answers at once, by a new zygote, and the stopped one is not left behind."""
    async with agent(tmp_path) as session:
        agent_pid = int((await session.hello)["pid"])
        procs = ProcessClient(session)
        assert await run(procs, "echo first") == (b"first\n", 0)
        first = await idle_zygote(agent_pid, set())
        supervisors = children(agent_pid) - {first}
        # The command is the idle zygote once it runs: it signals the next one, its sibling
        # (both are the agent's children), from inside, as a hostile command could.
        spare = " ".join(str(pid) for pid in supervisors) or "none"
        # Only a zygote set up (in its own session, as ``idle_zygote`` tells them apart): one
        # caught between its fork and its setsid would look like a supervisor to this test.
        signals = (
            'while :; do for p in $(cat /proc/$PPID/task/*/children); do case " $$ ' + spare + ' " in'
            ' *" $p "*) ;; *) set -- $(cat /proc/$p/stat 2>/dev/null); if [ "$6" = "$p" ]; then'
            f" kill -{signum.name[3:]} $p; exit 0; fi;; esac; done; sleep 0.01; done"
        )
        assert (await run(procs, signals))[1] == 0
        zygote = await idle_zygote(agent_pid, {first}) if signum == signal.SIGSTOP else None
        out, code = await asyncio.wait_for(run(procs, "echo again"), 3.0)
        assert (out, code) == (b"again\n", 0)
        if zygote is not None:
            assert state(zygote) == "gone"


async def test_the_idle_zygote_dies_with_the_agent(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        agent_pid = int((await session.hello)["pid"])
        procs = ProcessClient(session)
        assert await run(procs, "true") == (b"", 0)
        zygote = await idle_zygote(agent_pid, set())
        os.kill(agent_pid, signal.SIGKILL)
    for _ in range(5000):
        if state(zygote) in ("gone", "Z"):
            break
        await asyncio.sleep(0.002)
    assert state(zygote) in ("gone", "Z")


async def test_a_start_that_cannot_exec_says_why_and_the_next_one_runs(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        with pytest.raises(ProcessStartFailedError, match=r"no-such-command-here: .*No such file"):
            await procs.start(ProcessSpec(argv=("no-such-command-here",)), LIMITS)
        (tmp_path / "plain").write_text("not a program")
        with pytest.raises(ProcessStartFailedError, match="Permission denied"):
            await procs.start(ProcessSpec(argv=("./plain",)), LIMITS)
        assert await run(procs, "echo fine") == (b"fine\n", 0)
