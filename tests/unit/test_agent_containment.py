"""trove-agent containment: no process outlives its call, and no command reaches the channel.

Driven over pipes as in test_agent. Every stray process sleeps for a duration no other test
uses, and is looked for from outside (the host's /proc), so concurrent runs do not confuse it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.unit.test_agent import agent, spec
from tests.unit.test_agent_process_cap import SETPRIV, capped_agent
from trove_api.runtimes.channel import AGENT_SOURCE
from trove_api.runtimes.kubernetes.podexec import AGENT_COMMAND
from trove_core.errors import ChannelLostError

ESCAPES = {
    "setsid_without_marker": "setsid env -u TROVE_EXEC_TAG sleep {nap} >/dev/null 2>&1 < /dev/null &",
    "double_fork": "( ( sleep {nap} >/dev/null 2>&1 & ) & )",
    "nohup": "nohup sleep {nap} >/dev/null 2>&1 &",
    "disown": "sleep {nap} >/dev/null 2>&1 & disown",
    "setsid_double_fork": "( setsid sh -c 'sleep {nap} & ' >/dev/null 2>&1 & )",
}


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv to run the agent as a uid of its own"
)

WAIT_FOR = "until pgrep -f '^sleep {nap}$' >/dev/null; do sleep 0.01; done"


def unique_nap() -> str:
    return f"{200 + secrets.randbelow(100)}.{secrets.randbelow(10**6):06d}"


def sleepers(nap: str) -> list[int]:
    """Live host processes running ``sleep <nap>`` (zombies have no command line left)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.split(b"\0")[:2] == [b"sleep", nap.encode()]:
                found.append(int(entry.name))
    return found


async def gone(nap: str, within_s: float = 10) -> bool:
    """Whether every ``sleep <nap>`` is gone (a generous bound for a loaded machine, not a speed check)."""
    deadline = time.monotonic() + within_s
    while sleepers(nap):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.mark.parametrize("escape", sorted(ESCAPES))
async def test_nothing_a_call_started_survives_it(tmp_path: Path, escape: str) -> None:
    nap = unique_nap()
    try:
        async with agent(tmp_path) as session:
            # The call returns once the sleeper runs as ``sleep <nap>`` (env and setsid have exec'd).
            script = f"{ESCAPES[escape].format(nap=nap)}\n{WAIT_FOR.format(nap=nap)}; echo started"
            out = await session.exec(spec(script), 1 << 20)
            assert (out.stdout, out.exit_code) == (b"started\n", 0)
            # The call answers only once its supervisor has no process left.
            assert sleepers(nap) == []
    finally:
        for pid in sleepers(nap):
            os.kill(pid, signal.SIGKILL)


async def test_a_timed_out_call_leaves_nothing_either(tmp_path: Path) -> None:
    nap = unique_nap()
    try:
        async with agent(tmp_path) as session:
            escapes = f"setsid env -u TROVE_EXEC_TAG sleep {nap} & ( ( sleep {nap} & ) & )"
            script = f"{escapes}; echo started; sleep {nap}"
            out = await session.exec(spec(script, timeout=1), 1 << 20)
            assert out.timed_out
            assert (out.stdout, out.exit_code) == (b"started\n", 137)
            assert sleepers(nap) == []
    finally:
        for pid in sleepers(nap):
            os.kill(pid, signal.SIGKILL)


async def test_killing_its_supervisor_does_not_free_a_call(tmp_path: Path) -> None:
    # The command runs as the agent's user, so it can kill whatever runs the call: its orphans
    # then come up to the agent (a subreaper), which kills them.
    nap = unique_nap()
    try:
        async with agent(tmp_path) as session:
            script = f"setsid env -u TROVE_EXEC_TAG sleep {nap} >/dev/null 2>&1 & kill -9 $PPID; sleep {nap}"
            out = await asyncio.wait_for(session.exec(spec(script, timeout=5), 1 << 20), 30)
            assert out.exit_code == 137
            assert await gone(nap)
            again = await session.exec(spec("echo alive"), 1 << 20)
            assert again.stdout == b"alive\n"
    finally:
        for pid in sleepers(nap):
            os.kill(pid, signal.SIGKILL)


async def test_a_dead_agent_leaves_no_call_behind(tmp_path: Path) -> None:
    # Each supervisor watches its control pipe: when the agent dies, the pipe closes and the
    # supervisor kills its call.
    nap = unique_nap()
    try:
        async with agent(tmp_path) as session:
            pid = int((await session.hello)["pid"])
            running = asyncio.create_task(
                session.exec(
                    spec(f"setsid env -u TROVE_EXEC_TAG sleep {nap} & sleep {nap}", timeout=60), 1 << 20
                )
            )
            deadline = time.monotonic() + 10
            while len(sleepers(nap)) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert len(sleepers(nap)) == 2
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(ChannelLostError):
                await running
        assert await gone(nap)
    finally:
        for pid in sleepers(nap):
            os.kill(pid, signal.SIGKILL)


@needs_root
async def test_a_command_cannot_open_the_agents_descriptors() -> None:
    # As in a pod: the agent and its commands run as one unprivileged uid (root may read any
    # process's descriptors, so the check needs a uid of its own).
    async with capped_agent({}) as session:
        pid = int((await session.hello)["pid"])
        for target in (str(pid), "$PPID"):
            out = await session.exec(spec(f"ls /proc/{target}/fd/ && cat /proc/{target}/environ"), 1 << 20)
            assert out.exit_code != 0, (target, out)
            assert b"Permission denied" in out.stderr
        # A forged header announcing 16 MiB, written wherever the command can: nothing reaches
        # the channel, and the session still frames correctly.
        forged = "printf '\\001\\000\\000\\000\\000\\000\\000\\001\\007'"
        script = (
            f"for fd in /proc/{pid}/fd/* /proc/$PPID/fd/* /proc/$$/fd/* /dev/stdout /dev/stderr; do "
            f"{forged} > $fd; done 2>/dev/null; echo done"
        )
        out = await asyncio.wait_for(session.exec(spec(script), 1 << 20), 30)
        assert out.stdout.endswith(b"done\n")
        again = await asyncio.wait_for(session.exec(spec("echo alive"), 1 << 20), 30)
        assert again.stdout == b"alive\n"


@needs_root
async def test_the_channel_descriptors_stay_with_the_agent() -> None:
    """A call's processes hold no descriptor but their own: never the channel's pipes."""
    async with capped_agent({}) as session:
        out = await session.exec(spec("ls /proc/$$/fd"), 1 << 20)
        assert sorted(int(fd) for fd in out.stdout.split()) == [0, 1, 2, 3]  # 3: ls's own listing


@pytest.mark.skipif(shutil.which("python3", path="/usr/bin:/bin") is None, reason="needs a system python3")
def test_the_agent_command_ignores_the_users_site_packages(tmp_path: Path) -> None:
    """A command can write ``$HOME/.local``: the agent's interpreter must not run its .pth files."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    version = subprocess.run(
        [python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    home = tmp_path / "home"
    site = home / ".local" / "lib" / f"python{version}" / "site-packages"
    site.mkdir(parents=True)
    marker = tmp_path / "marker"
    (site / "evil.pth").write_text(f"import os; open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "root").mkdir()
    # The pod's command, with this checkout's agent and a scratch root.
    swap = {"python3": python, AGENT_COMMAND[-2]: str(AGENT_SOURCE), "/workspace": str(tmp_path / "root")}
    argv = [swap.get(arg, arg) for arg in AGENT_COMMAND]
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.read(9)  # HELLO: the interpreter has started and the agent runs
        proc.stdin.close()
        proc.stdout.read()
    assert not marker.exists()


async def test_a_cancelled_call_leaves_nothing(tmp_path: Path) -> None:
    # The HTTP client went away: the API cancels the exec, and the agent kills its whole tree.
    nap = unique_nap()
    try:
        async with agent(tmp_path) as session:
            script = f"setsid env -u TROVE_EXEC_TAG sleep {nap} & ( ( sleep {nap} & ) & ); sleep {nap}"
            running = asyncio.create_task(session.exec(spec(script, timeout=60), 1 << 20))
            deadline = time.monotonic() + 10
            while len(sleepers(nap)) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert len(sleepers(nap)) == 3
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            assert await gone(nap)
            again = await session.exec(spec("echo alive"), 1 << 20)
            assert again.stdout == b"alive\n"
    finally:
        for pid in sleepers(nap):
            os.kill(pid, signal.SIGKILL)


async def test_a_stopped_supervisor_does_not_hold_a_call(tmp_path: Path) -> None:
    # SIGSTOP on its supervisor: the call still ends at its timeout (plus the agent's grace),
    # the supervisor is killed, and its orphans with it.
    nap = unique_nap()
    try:
        async with agent(tmp_path) as session:
            script = (
                f"setsid env -u TROVE_EXEC_TAG sleep {nap} >/dev/null 2>&1 & kill -STOP $PPID; sleep {nap}"
            )
            out = await asyncio.wait_for(session.exec(spec(script, timeout=1), 1 << 20), 60)
            assert (out.exit_code, out.timed_out) == (137, True)
            assert await gone(nap)
            again = await session.exec(spec("echo alive"), 1 << 20)
            assert again.stdout == b"alive\n"
    finally:
        for pid in sleepers(nap):
            os.kill(pid, signal.SIGKILL)


async def test_supervisors_are_reused_and_hold_nothing_of_a_previous_call(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        # Its supervisor, then the pipes this call got (its own 0, 1, 2), then what the supervisor
        # holds. (Counting the supervisor's descriptors would race with it closing the shell's
        # ends just after the spawn.)
        probe = (
            "echo $PPID; readlink /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2; echo --; "
            "readlink /proc/$PPID/fd/*"
        )
        calls = []
        for _ in range(6):
            out = (await session.exec(spec(probe, stdin=b""), 1 << 20)).stdout.decode().split("--\n")
            supervisor, *own = out[0].split()
            calls.append((supervisor, set(own), set(out[1].split())))
        assert len({supervisor for supervisor, _own, _held in calls}) == 1  # the same supervisor
        for (_, earlier, _), (_, _, held) in itertools.pairwise(calls):
            assert not earlier & held  # nothing of the previous call's pipes


async def test_a_supervisor_stopped_while_idle_is_not_handed_a_call(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        # Two calls at once: two supervisors, both idle afterwards.
        both = await asyncio.gather(*[session.exec(spec("sleep 0.5; echo $PPID"), 1 << 20) for _ in range(2)])
        supervisors = {int(out.stdout) for out in both}
        assert len(supervisors) == 2
        # A later call stops the one it does not run under.
        mine = await session.exec(spec("echo $PPID"), 1 << 20)
        (other,) = supervisors - {int(mine.stdout)}
        await session.exec(spec(f"kill -STOP {other}"), 1 << 20)
        # Two calls at once again: neither is handed to the stopped one, neither waits.
        outs = await asyncio.wait_for(
            asyncio.gather(
                *[session.exec(spec("sleep 0.2; echo $PPID", timeout=3), 1 << 20) for _ in range(2)]
            ),
            30,
        )
        assert [out.timed_out for out in outs] == [False, False]
        assert other not in {int(out.stdout) for out in outs}


@pytest.mark.skipif(os.geteuid() != 0, reason="reads another process's descriptors")
async def test_supervisors_never_hold_the_channel(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        pid = int((await session.hello)["pid"])
        channel = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1)}
        out = await session.exec(
            spec("for f in /proc/$PPID/fd/* /proc/$$/fd/*; do readlink $f; done"), 1 << 20
        )
        held = set(out.stdout.decode().split())
        assert held
        assert channel.isdisjoint(held), channel & held


async def test_idle_supervisors_go_away(tmp_path: Path) -> None:
    """A quiet sandbox keeps no supervisor (each holds a few megabytes of its own)."""
    script = tmp_path / "agent.py"
    source = AGENT_SOURCE.read_text()
    script.write_text(
        source.replace("SUPERVISOR_IDLE_S = 30.0", "SUPERVISOR_IDLE_S = 0.0").replace(
            "SWEEP_EVERY_S = 5.0", "SWEEP_EVERY_S = 0.1"
        )
    )
    root = tmp_path / "root"
    root.mkdir()
    async with agent(root, script=script) as session:
        supervisor = int((await session.exec(spec("echo $PPID"), 1 << 20)).stdout)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{supervisor}").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not Path(f"/proc/{supervisor}").exists()
        again = await session.exec(spec("echo alive"), 1 << 20)
        assert again.stdout == b"alive\n"


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
            found |= {int(child) for child in f.read().split()}
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="reads the children of a non-dumpable process")
async def test_the_first_call_runs_under_a_supervisor_forked_ahead(tmp_path: Path) -> None:
    # Forked right after HELLO, while the first request is on its way: the first exec of a
    # new sandbox does not wait for a fork.
    async with agent(tmp_path) as session:
        pid = int((await session.hello)["pid"])
        deadline = time.monotonic() + 10
        while not (ahead := _children(pid)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert ahead
        out = await session.exec(spec("echo $PPID"), 1 << 20)
        assert int(out.stdout) in ahead
