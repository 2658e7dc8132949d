"""Processes that outlive a call: trove-agent's ``proc_*`` ops through the channel client, over pipes.

The real agent runs as in test_agent; each test drives it as the runtimes do (``ProcessClient``
over an ``AgentSession``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.test_agent import agent, spec
from trove_api.runtimes.agent import trove_agent
from trove_api.runtimes.channel.processes import WINDOW, ProcessClient, ProcessLimits
from trove_api.runtimes.channel.protocol import DATA
from trove_api.runtimes.channel.session import AgentSession
from trove_core.errors import (
    PathRejectedError,
    ProcessLimitReachedError,
    ProcessNotAPtyError,
    ProcessNotFoundError,
    ProcessStartFailedError,
    ProcessStdinClosedError,
)
from trove_core.runtime import ProcessEnd, ProcessOutput, ProcessSpec, PtySize

LIMITS = ProcessLimits()
BASH_I = ("bash", "--norc", "--noprofile", "-i")


def sh(script: str, *, stdin: bool = False, tag: str | None = None) -> ProcessSpec:
    return ProcessSpec(argv=("bash", "-c", script), stdin=stdin, tag=tag)


async def until(items: AsyncIterator[ProcessOutput | ProcessEnd], needle: bytes) -> bytes:
    """Output read until ``needle`` has appeared (the process keeps running)."""
    seen = b""
    async for item in items:
        assert isinstance(item, ProcessOutput), f"ended before {needle!r}; output: {seen!r}"
        seen += item.data
        if needle in seen:
            return seen
    raise AssertionError("the stream stopped without an end")


async def to_end(items: AsyncIterator[ProcessOutput | ProcessEnd]) -> tuple[bytes, ProcessEnd]:
    seen = b""
    async for item in items:
        if isinstance(item, ProcessEnd):
            return seen, item
        seen += item.data
    raise AssertionError("the stream stopped without an end")


def state(pid: int) -> str:
    """The kernel's state letter for ``pid``, or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


async def test_output_streams_while_it_runs_and_stdin_reaches_it(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        info = await procs.start(
            sh("echo first; read x; echo got-$x; echo oops >&2; exit 3", stdin=True), LIMITS
        )
        assert (info.running, info.exit_code, info.stdin) == (True, None, True)
        output = procs.output(info.pid)
        # The process is blocked reading its stdin: this chunk can only have come as it ran.
        first = await anext(output)
        assert first == ProcessOutput("stdout", b"first\n", 0)
        # The stream stays open and other requests on the channel go on meanwhile.
        assert (await session.exec(spec("echo beside"), 1 << 20)).stdout == b"beside\n"
        await procs.write_stdin(info.pid, b"yes\n")
        rest = [item async for item in output]
        assert rest == [
            ProcessOutput("stdout", b"got-yes\n", 6),
            ProcessOutput("stderr", b"oops\n", 14),
            ProcessEnd(3, 19),
        ]
        assert await procs.wait(info.pid) == 3


async def test_stdin_is_a_pipe_until_closed(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        cat = await procs.start(ProcessSpec(argv=("cat",), stdin=True), LIMITS)
        await procs.write_stdin(cat.pid, b"abc")
        await procs.write_stdin(cat.pid, b"\x00def" * 100_000)  # more than a pipe holds
        await procs.close_stdin(cat.pid)
        out, end = await to_end(procs.output(cat.pid))
        assert out == b"abc" + b"\x00def" * 100_000
        assert end.exit_code == 0
        with pytest.raises(ProcessStdinClosedError):
            await procs.write_stdin(cat.pid, b"late")
        deaf = await procs.start(sh("sleep 100"), LIMITS)  # started without stdin
        with pytest.raises(ProcessStdinClosedError):
            await procs.write_stdin(deaf.pid, b"x")
        await procs.signal(deaf.pid, signal.SIGKILL)


async def test_a_pty_shell_answers_typed_input_and_sees_its_size(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        shell = await procs.start(ProcessSpec(argv=BASH_I, pty=PtySize(24, 80)), LIMITS)
        assert shell.pty == PtySize(24, 80)
        output = procs.output(shell.pid)
        await procs.write_stdin(shell.pid, b"tty; echo hi-$((6*7))\n")
        seen = await until(output, b"hi-42")
        assert b"/dev/pts/" in seen  # a real terminal, its controlling one
        await procs.write_stdin(shell.pid, b"stty size\n")
        assert b"24 80" in await until(output, b"24 80")
        await procs.resize(shell.pid, PtySize(33, 101))
        await procs.write_stdin(shell.pid, b"stty size\n")
        assert b"33 101" in await until(output, b"33 101")
        [listed] = await procs.list()
        assert listed.pty == PtySize(33, 101)
        await procs.write_stdin(shell.pid, b"exit 7\n")
        rest, end = await to_end(output)
        assert end.exit_code == 7
        assert end.cursor >= len(seen + rest)


async def test_python_repl_on_a_pty(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        repl = await procs.start(ProcessSpec(argv=("python3", "-q", "-i"), pty=PtySize(24, 80)), LIMITS)
        output = procs.output(repl.pid)
        await procs.write_stdin(repl.pid, b"print(6 * 7 * 1000 + 1)\n")
        # ^D at an empty prompt ends the REPL: sent once the prompt is up (readline reads the
        # terminal raw from then on; an EOF typed while it switches modes can be lost).
        await until(output, b"42001\r\n>>> ")
        await procs.close_stdin(repl.pid)
        _rest, end = await to_end(output)
        assert end.exit_code == 0


async def test_a_pty_stream_is_labelled_pty(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        info = await procs.start(
            ProcessSpec(argv=("bash", "-c", "echo out; echo err >&2"), pty=PtySize(5, 20)), LIMITS
        )
        items = [item async for item in procs.output(info.pid)]
        assert {item.stream for item in items if isinstance(item, ProcessOutput)} == {"pty"}
        assert b"".join(i.data for i in items if isinstance(i, ProcessOutput)) == b"out\r\nerr\r\n"


async def test_signal_wait_and_list(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        (tmp_path / "sub").mkdir()
        sleeper = await procs.start(
            ProcessSpec(argv=("sleep", "100"), cwd="sub", tag="sleeper", env={"A": "1"}), LIMITS
        )
        quick = await procs.start(sh("echo $A-$(pwd)", tag="quick"), LIMITS)
        assert await procs.wait(quick.pid) == 0
        listed = {info.tag: info for info in await procs.list()}
        assert (listed["sleeper"].running, listed["sleeper"].cwd) == (True, "sub")
        assert (listed["sleeper"].argv, listed["sleeper"].env) == (("sleep", "100"), {"A": "1"})
        assert (listed["quick"].running, listed["quick"].exit_code) == (False, 0)
        assert listed["quick"].cursor == len(f"-{tmp_path.resolve()}\n")  # all it wrote
        assert session.live_processes == {sleeper.pid}
        waiting = asyncio.create_task(procs.wait(sleeper.pid))
        await procs.signal(sleeper.pid, signal.SIGTERM)
        assert await waiting == 128 + signal.SIGTERM
        assert await procs.wait(sleeper.pid) == 128 + signal.SIGTERM  # again, after the end
        await procs.signal(sleeper.pid, signal.SIGTERM)  # an ended process: nothing to do
        assert session.live_processes == set()
        out, _end = await to_end(procs.output(quick.pid))
        assert out == f"-{tmp_path.resolve()}\n".encode()  # env given to the other one only
        with pytest.raises(ProcessNotFoundError):
            await procs.wait(999_999_999)


async def test_reconnect_from_a_cursor(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        info = await procs.start(sh("printf abc; read x; printf def", stdin=True), LIMITS)
        output = procs.output(info.pid)
        assert await until(output, b"abc") == b"abc"
        await output.aclose()  # the reader leaves; the process does not notice
        await procs.write_stdin(info.pid, b"\n")
        assert await procs.wait(info.pid) == 0
        assert [item async for item in procs.output(info.pid, cursor=3)] == [
            ProcessOutput("stdout", b"def", 3),
            ProcessEnd(0, 6),
        ]
        again, end = await to_end(procs.output(info.pid))
        assert (again, end) == (b"abcdef", ProcessEnd(0, 6))
        assert [item async for item in procs.output(info.pid, cursor=6)] == [ProcessEnd(0, 6)]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_flood_is_kept_to_the_buffer_and_the_drop_is_reported(tmp_path: Path) -> None:
    buffer = 128 * 1024
    flood = 100 * 1024 * 1024
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        agent_pid = int((await session.hello)["pid"])
        before = _rss_kb(agent_pid)
        limits = ProcessLimits(buffer_bytes=buffer)
        info = await procs.start(sh(f"head -c {flood} /dev/zero; echo END"), limits)
        assert await procs.wait(info.pid) == 0
        grown_kb = _rss_kb(agent_pid) - before
        items = [item async for item in procs.output(info.pid)]
        assert isinstance(items[-1], ProcessEnd)
        data = [item for item in items if isinstance(item, ProcessOutput)]
        kept = b"".join(item.data for item in data)
        assert kept.endswith(b"\0END\n")
        assert len(kept) <= buffer
        assert data[0].dropped == data[0].cursor == flood + 4 - len(kept)
        assert items[-1].cursor == flood + 4
    assert grown_kb < 32 * 1024, f"the agent grew by {grown_kb} KiB for a 100 MiB flood"


async def test_a_reader_that_does_not_read_is_paced_not_queued(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        info = await procs.start(sh("head -c 20000000 /dev/zero"), ProcessLimits(buffer_bytes=128 * 1024))
        output = procs.output(info.pid)
        assert isinstance(await anext(output), ProcessOutput)
        assert await procs.wait(info.pid) == 0  # the flood ended while this reader sat still
        [request] = [r for r in session.requests.values() if r.queue.qsize()]
        waiting = sum(len(payload) for _kind, payload in list(request.queue._queue))  # type: ignore[attr-defined]
        assert waiting <= WINDOW + 1024  # one window in flight, not the 20 MB
        items = [item async for item in output]
        assert any(isinstance(i, ProcessOutput) and i.dropped for i in items)  # it was told
        assert items[-1] == ProcessEnd(0, 20_000_000)


async def test_the_count_of_running_processes_is_bounded(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        limits = ProcessLimits(max_running=2)
        one = await procs.start(sh("sleep 100"), limits)
        await procs.start(sh("sleep 100"), limits)
        with pytest.raises(ProcessLimitReachedError):
            await procs.start(sh("echo never"), limits)
        await procs.signal(one.pid, signal.SIGKILL)
        await procs.wait(one.pid)
        third = await procs.start(sh("echo now"), limits)
        assert await procs.wait(third.pid) == 0


async def test_bad_starts_and_requests_are_refused(tmp_path: Path) -> None:
    (tmp_path.parent / f"outside-{secrets.token_hex(4)}").mkdir()
    (tmp_path / "out").symlink_to(tmp_path.parent)
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        with pytest.raises(ProcessStartFailedError):
            await procs.start(ProcessSpec(argv=("no-such-command-here",)), LIMITS)
        with pytest.raises(PathRejectedError):
            await procs.start(ProcessSpec(argv=("true",), cwd="out"), LIMITS)
        plain = await procs.start(sh("sleep 100"), LIMITS)
        with pytest.raises(ProcessNotAPtyError):
            await procs.resize(plain.pid, PtySize(10, 10))
        await procs.signal(plain.pid, signal.SIGKILL)
        assert session.live_processes == {plain.pid}
        assert await procs.wait(plain.pid) == 128 + signal.SIGKILL
        assert (await session.exec(spec("echo fine"), 1 << 20)).stdout == b"fine\n"


async def test_processes_end_with_the_session(tmp_path: Path) -> None:
    nap = f"300.{secrets.randbelow(10**6):06d}"
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        plain = await procs.start(sh(f"setsid sleep {nap} & sleep {nap}"), LIMITS)
        shell = await procs.start(ProcessSpec(argv=BASH_I, pty=PtySize(24, 80)), LIMITS)
        await procs.write_stdin(shell.pid, f"sleep {nap}\n".encode())
        pids = [plain.pid, shell.pid]
        assert all(state(pid) not in ("gone", "Z") for pid in pids)
    # The agent has exited (its channel closed): it killed and reaped what it started.
    assert [state(pid) for pid in pids] == ["gone", "gone"]
    assert _sleeping(nap) == []


async def test_processes_die_with_an_agent_that_is_killed(tmp_path: Path) -> None:
    """No clean exit (the OOM killer, a pod eviction): the kernel kills them (PR_SET_PDEATHSIG)."""
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        plain = await procs.start(sh("sleep 1000"), LIMITS)
        shell = await procs.start(ProcessSpec(argv=BASH_I, pty=PtySize(24, 80)), LIMITS)
        os.kill(int((await session.hello)["pid"]), signal.SIGKILL)
    # Delivered as the agent dies, acted on when each process next runs: poll, do not time.
    for pid in (plain.pid, shell.pid):
        for _ in range(5000):
            if state(pid) in ("gone", "Z"):
                break
            await asyncio.sleep(0.002)
        assert state(pid) in ("gone", "Z")


async def test_what_a_process_leaves_behind_ends_with_it(tmp_path: Path) -> None:
    nap = f"300.{secrets.randbelow(10**6):06d}"
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        info = await procs.start(
            sh(f"sleep {nap} & setsid sleep {nap} & (sleep {nap} &) ; echo started"), LIMITS
        )
        out, end = await to_end(procs.output(info.pid))
        assert (out, end.exit_code) == (b"started\n", 0)
        assert _sleeping(nap) == []


async def test_a_daemon_it_forks_lives_while_it_runs(tmp_path: Path) -> None:
    """A double fork inside a running process stays below it, not an orphan of the agent: the
    agent's sweep kills unknown children, and must not take this one."""
    nap = f"300.{secrets.randbelow(10**6):06d}"
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        info = await procs.start(sh(f"(setsid sleep {nap} &) ; echo started; exec sleep {nap}"), LIMITS)
        await until(procs.output(info.pid), b"started")
        # An exec that kills its own supervisor makes the agent sweep its orphans at once.
        await session.exec(spec("kill -9 $PPID"), 1 << 20)
        assert len(_sleeping(nap)) == 2
        await procs.signal(info.pid, signal.SIGKILL)
        await procs.wait(info.pid)
        assert _sleeping(nap) == []


def _sleeping(nap: str) -> list[str]:
    return [
        name
        for name in os.listdir("/proc")
        if name.isdigit() and state(int(name)) not in ("gone", "Z") and _cmdline(name) == f"sleep {nap}"
    ]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


async def test_exec_still_leaves_nothing_behind(tmp_path: Path) -> None:
    """A one-shot exec is not one of these processes: its background job dies with the call."""
    nap = f"300.{secrets.randbelow(10**6):06d}"
    async with agent(tmp_path) as session:
        out = await session.exec(spec(f"sleep {nap} & echo started"), 1 << 20)
        assert out.stdout == b"started\n"
        assert await ProcessClient(session).list() == []
        check = await session.exec(spec(f"ps -eo args | grep -c '^sleep {nap}$' || true"), 1 << 20)
        assert check.stdout.strip() == b"0"


class _PipeChannel:
    """Stands in for the pod transport (``WarmChannel``) under the Kubernetes runtime's
    housekeeping: the session and the agent behind it are real, only the websocket is not."""

    def __init__(self, session: AgentSession) -> None:
        self.session = session
        self.closed_by_runtime = False

    @property
    def open(self) -> bool:
        return not self.session.closed

    async def close(self) -> None:
        self.closed_by_runtime = True


async def test_an_idle_channel_with_a_running_process_stays_open(tmp_path: Path) -> None:
    from trove_api.runtimes.kubernetes.runtime import KubernetesRuntime
    from trove_core.settings import Settings

    runtime = KubernetesRuntime(Settings(data_dir=tmp_path / "data", k8s_channel_idle_s=1), api=None)  # type: ignore[arg-type]
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        sleeper = await procs.start(sh("sleep 100"), LIMITS)
        channel = _PipeChannel(session)
        runtime._channels["ns"] = channel  # type: ignore[assignment]
        session.last_used -= 3600  # unused for an hour
        await runtime._close_idle()
        assert not channel.closed_by_runtime  # closing it would end the agent and the sleeper
        await procs.signal(sleeper.pid, signal.SIGKILL)
        await procs.wait(sleeper.pid)
        session.last_used -= 3600
        await runtime._close_idle()
        assert channel.closed_by_runtime
        assert "ns" not in runtime._channels


async def test_an_idle_channel_learns_of_processes_that_ended_unwatched(tmp_path: Path) -> None:
    from trove_api.runtimes.kubernetes.runtime import KubernetesRuntime
    from trove_core.settings import Settings

    runtime = KubernetesRuntime(Settings(data_dir=tmp_path / "data", k8s_channel_idle_s=1), api=None)  # type: ignore[arg-type]
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        quick = await procs.start(sh("true"), LIMITS)
        # Nobody waits for it or reads its output: only the agent knows it has ended.
        assert session.live_processes == {quick.pid}
        channel = _PipeChannel(session)
        runtime._channels["ns"] = channel  # type: ignore[assignment]
        while session.live_processes:
            session.last_used -= 3600
            await runtime._close_idle()
        assert channel.closed_by_runtime


async def test_an_input_cut_off_midway_does_not_hold_the_process(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        procs = ProcessClient(session)
        cat = await procs.start(ProcessSpec(argv=("cat",), stdin=True), LIMITS)
        # An input whose EOF never comes (a caller that went away between its frames).
        request = await session.open({"op": "proc_stdin", "pid": cat.pid})
        await request.send(DATA, b"partial ")
        await procs.write_stdin(cat.pid, b"whole\n")
        output = procs.output(cat.pid)
        assert await until(output, b"whole\n") == b"partial whole\n"
        await procs.signal(cat.pid, signal.SIGTERM)
        assert await procs.wait(cat.pid) == 128 + signal.SIGTERM  # its end did not wait for that input
        request.close()


def test_leftovers_are_looked_for_on_the_loop_when_proc_is_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process's end looks for what it left (its marker in an environment) on the agent's
    loop when /proc is a sandbox's short list, and leaves the look to the killing thread when
    /proc is too long to read there."""
    marker = secrets.token_hex(8)
    env = {**os.environ, trove_agent.PROCESS_MARKER: marker}
    monkeypatch.setattr(trove_agent, "QUICK_SCAN_PIDS", 1 << 30)  # this host's /proc: read it all
    with subprocess.Popen(["sleep", "60"], env=env) as left:
        assert trove_agent.marked_left(marker)
        left.kill()
    assert not trove_agent.marked_left(marker)
    monkeypatch.setattr(trove_agent, "QUICK_SCAN_PIDS", 0)
    assert trove_agent.marked_left(marker)  # not looked at: the thread looks, and kills
