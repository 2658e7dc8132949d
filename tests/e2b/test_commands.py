"""``commands`` through the official e2b SDK: streamed output, exit codes, background handles."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2b import CommandExitException, Sandbox
from e2b.exceptions import TimeoutException

from tests.e2b import WAIT_S
from tests.support.server import LiveServer


@pytest.fixture
def sbx(e2b_env: LiveServer) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(envs={"FROM_CREATE": "created"})
    try:
        yield sandbox
    finally:
        sandbox.kill()


def test_foreground_output_streams_before_the_end(sbx: Sandbox) -> None:
    arrivals: list[tuple[float, str]] = []
    # The second line waits for a file the test writes only after the first line arrived, so
    # the command cannot have ended before its first chunk reached the callback.
    handle = sbx.commands.run(
        "echo first; while [ ! -f go ]; do sleep 0.05; done; echo second >&2", background=True
    )
    for stdout, stderr, _ in handle:
        arrivals.append((time.monotonic(), stdout or stderr or ""))
        if stdout and "first" in stdout:
            sbx.files.write("go", "")
    result = handle.wait()
    ended = time.monotonic()
    assert result.exit_code == 0
    assert result.stdout == "first\n"
    assert result.stderr == "second\n"
    assert arrivals[0][1] == "first\n"
    assert arrivals[0][0] < arrivals[-1][0] <= ended


def test_callbacks_exit_codes_and_command_exit_exception(sbx: Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    result = sbx.commands.run("echo out; echo err >&2", on_stdout=out.append, on_stderr=err.append)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "out\n", "err\n")
    assert ("".join(out), "".join(err)) == ("out\n", "err\n")
    with pytest.raises(CommandExitException) as failed:
        sbx.commands.run("echo partial; exit 3")
    assert failed.value.exit_code == 3
    assert failed.value.stdout == "partial\n"


def test_envs_cwd_and_user(sbx: Sandbox) -> None:
    sbx.files.make_dir("/home/user/sub")
    sbx.files.write("/home/user/sub/here.txt", "x")
    result = sbx.commands.run(
        'echo "$FROM_CREATE $MINE"; ls', envs={"MINE": "mine"}, cwd="/home/user/sub", user="user"
    )
    assert result.stdout == "created mine\nhere.txt\n"
    # The default cwd is E2B's home: the namespace's workspace/.
    sbx.files.write("home.txt", "y")
    assert "home.txt" in sbx.commands.run("ls").stdout


def test_background_wait_stdin_close_and_kill(sbx: Sandbox) -> None:
    cat = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(cat.pid, "typed\n")
    cat.send_stdin("more\n")
    cat.close_stdin()
    assert cat.wait().stdout == "typed\nmore\n"

    sleeper = sbx.commands.run("sleep 600", background=True, timeout=0)
    assert sleeper.pid in [p.pid for p in sbx.commands.list()]
    assert sleeper.kill() is True
    with pytest.raises(CommandExitException) as killed:
        sleeper.wait()
    assert killed.value.exit_code == 137
    assert sleeper.pid not in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(999_999) is False


def test_list_and_connect_to_a_running_command(sbx: Sandbox) -> None:
    handle = sbx.commands.run(
        "echo before; while [ ! -f go ]; do sleep 0.05; done; echo after", background=True
    )
    listed = {p.pid: p for p in sbx.commands.list()}
    assert listed[handle.pid].cmd == "/bin/bash"
    assert listed[handle.pid].args[-1].startswith("echo before")
    assert listed[handle.pid].cwd == "/home/user"
    handle.disconnect()
    again = sbx.commands.connect(handle.pid)
    sbx.files.write("go", "")
    result = again.wait()
    assert result.stdout == "before\nafter\n"


def test_timeout_kills_the_command(sbx: Sandbox) -> None:
    with pytest.raises((TimeoutException, CommandExitException)):
        sbx.commands.run("sleep 600; echo never", timeout=1)
    for _ in range(100):
        if not [p for p in sbx.commands.list() if "sleep 600" in " ".join(p.args)]:
            break
        time.sleep(0.1)
    assert not [p for p in sbx.commands.list() if "sleep 600" in " ".join(p.args)]


def _exec_events(server: LiveServer, sandbox_id: str, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for _ in range(200):
        events = httpx.get(
            f"{server.base_url}/v1/workspaces/{server.workspace_id}/events",
            params={"namespace": sandbox_id, "types": "exec.completed"},
            headers={"Authorization": f"Bearer {server.workspace_key}"},
            timeout=WAIT_S,
        ).json()["events"]
        if len(events) >= count:
            break
        time.sleep(0.05)
    return events


def test_finished_commands_emit_exec_completed(sbx: Sandbox, e2b_env: LiveServer) -> None:
    with pytest.raises(CommandExitException):
        sbx.commands.run("echo visible; exit 4")
    (failed,) = _exec_events(e2b_env, sbx.sandbox_id, 1)
    assert failed["data"]["exit_code"] == 4
    assert failed["data"]["stdout"] == "visible\n"
    assert "echo visible" in failed["data"]["command"]
    # A flood: previews from its first bytes, the exit awaited without reading the rest.
    sbx.commands.run("head -c 3000000 /dev/zero | tr '\\0' a; echo >&2 late", on_stdout=lambda _: None)
    events = _exec_events(e2b_env, sbx.sandbox_id, 2)
    flood = next(e for e in events if "tr" in e["data"]["command"])
    assert (flood["data"]["exit_code"], flood["data"]["truncated"]) == (0, True)
    assert flood["data"]["stdout"].startswith("aaaa")
