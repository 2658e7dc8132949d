"""Exec under attack: fork bombs, output floods, hangs, stray processes, memory and file size."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import pytest
from trove_sdk import TroveTimeoutError

from tests.hostile.helpers import LIMITS, MIB, assert_problem, command_pids, ns_dir
from tests.support.sdk import client
from tests.support.server import LiveServer

OUTPUT_MAX = LIMITS["exec_output_bytes"]
MARKER = f"[output truncated at {OUTPUT_MAX} bytes]"


def _rss_bytes() -> int:
    # The test server runs in this process, so its memory is ours.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


def _still_responsive(http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200
    after = http.post("/v1/exec", json={"command": "echo alive"})
    assert after.status_code == 200, after.text
    assert after.json()["stdout"] == "alive\n"


def test_fork_bomb_is_contained(api: httpx.Client, hostile: LiveServer, namespace: str) -> None:
    response = api.post("/v1/exec", json={"command": ":(){ :|:& };:"})
    assert response.status_code in (200, 408), response.text
    if response.status_code == 408:
        assert_problem(response, 408, "exec_timeout")
    _still_responsive(api)
    assert command_pids(hostile, namespace) == []
    # Other namespaces are unaffected too.
    with client(hostile, namespace + "-b") as trove:
        assert trove.exec("echo neighbour") == "neighbour\n"


def test_process_cap_applies(api: httpx.Client) -> None:
    many = LIMITS["exec_pids"] + 20
    response = api.post("/v1/exec", json={"command": f"for i in $(seq {many}); do sleep 5 & done; echo done"})
    assert response.status_code in (200, 408), response.text
    assert "Resource temporarily unavailable" in response.json()["stderr"]
    _still_responsive(api)


def test_output_flood_is_capped(api: httpx.Client) -> None:
    rss = _rss_bytes()
    response = api.post("/v1/exec", json={"command": "yes | head -c 20000000; echo tail-of-output >&2"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["truncated"] is True
    assert body["stdout"].endswith(MARKER + "\n")
    assert len(body["stdout"].encode()) <= OUTPUT_MAX + len(MARKER) + 2
    assert body["stdout"].startswith("y\ny\n")
    assert body["stderr"] == "tail-of-output\n"  # the other stream is independent
    assert _rss_bytes() - rss < 200 * MIB


def test_endless_output_times_out_capped(api: httpx.Client) -> None:
    rss = _rss_bytes()
    response = api.post("/v1/exec", json={"command": "yes; echo never"})
    body = assert_problem(response, 408, "exec_timeout")
    assert body["truncated"] is True
    assert str(body["stdout"]).endswith(MARKER + "\n")
    assert len(str(body["stdout"]).encode()) <= OUTPUT_MAX + len(MARKER) + 2
    assert _rss_bytes() - rss < 200 * MIB
    _still_responsive(api)


def test_both_streams_flooding(api: httpx.Client) -> None:
    response = api.post(
        "/v1/exec",
        json={"command": "head -c 5000000 /dev/zero | tr '\\0' e >&2 & yes | head -c 5000000; wait"},
    )
    body = response.json()
    assert body["truncated"] is True
    assert body["stdout"].endswith(MARKER + "\n")
    assert body["stderr"].endswith(MARKER + "\n")


def test_legacy_exec_is_capped_too(api: httpx.Client) -> None:
    response = api.post("/exec", json={"command": "yes | head -c 5000000"})
    assert response.status_code == 200
    assert response.text.endswith(MARKER + "\n")
    assert len(response.content) <= OUTPUT_MAX + len(MARKER) + 2


def test_hang_times_out_with_partial_output(api: httpx.Client, hostile: LiveServer, namespace: str) -> None:
    response = api.post("/v1/exec", json={"command": "echo before; echo oops >&2; sleep 100; echo after"})
    body = assert_problem(response, 408, "exec_timeout")
    assert "timed out" in str(body["detail"]).lower()
    assert body["stdout"] == "before\n"
    assert body["stderr"] == "oops\n"
    assert command_pids(hostile, namespace) == []
    legacy = api.post("/exec", json={"command": "sleep 100"})
    assert_problem(legacy, 408, "exec_timeout")
    with client(hostile, namespace) as trove, pytest.raises(TroveTimeoutError) as info:
        trove.exec("sleep 100")
    assert info.value.status_code == 408


def test_init_script_cannot_hang_the_shell_forever(api: httpx.Client) -> None:
    assert api.post("/write", json={"path": ".trove/init.sh", "content": "sleep 100\n"}).status_code == 200
    assert_problem(api.post("/v1/exec", json={"command": "echo hi"}), 408, "exec_timeout")
    assert api.post("/delete", json={"path": ".trove/init.sh"}).status_code == 200
    _still_responsive(api)


@pytest.mark.parametrize(
    "launcher",
    [
        "sleep {t} &",
        "sleep {t} & disown",
        "setsid sleep {t} &",
        "setsid -f sleep {t}",
        "nohup sleep {t} >/dev/null 2>&1 &",
        "( (sleep {t} &) & )",
        "bash -c 'sleep {t} & exit 0' &",
        "sleep {t} </dev/null >/dev/null 2>&1 &",
        "exec {{fd}}>/dev/null; sleep {t} >&$fd 2>&$fd &",
        "trap '' HUP TERM; (trap '' HUP TERM; exec -a trove-bg sleep {t}) &",
    ],
)
def test_background_processes_do_not_outlive_their_exec(
    api: httpx.Client, hostile: LiveServer, namespace: str, launcher: str
) -> None:
    # A unique duration marks this test's processes on the host.
    seconds = f"1000.{secrets.randbelow(10**6):06d}"
    started = api.post("/v1/exec", json={"command": launcher.format(t=seconds) + "\necho launched"})
    assert started.status_code == 200, started.text
    assert "launched" in started.json()["stdout"]
    later = api.post(
        "/v1/exec",
        json={"command": f"ps -eo pid,args | grep -c '[s]leep {seconds}'; ls /proc | grep -c '^[0-9]'"},
    )
    assert later.status_code == 200, later.text
    count, _procs = later.json()["stdout"].split()
    assert count == "0"
    assert _host_processes_with(f"sleep\x00{seconds}") == []
    assert command_pids(hostile, namespace) == []


def test_background_process_does_not_outlive_a_timeout(
    api: httpx.Client, hostile: LiveServer, namespace: str
) -> None:
    seconds = f"1000.{secrets.randbelow(10**6):06d}"
    response = api.post(
        "/v1/exec", json={"command": f"setsid sleep {seconds} & nohup sleep {seconds} & sleep 100"}
    )
    assert_problem(response, 408, "exec_timeout")
    assert _host_processes_with(f"sleep\x00{seconds}") == []
    assert command_pids(hostile, namespace) == []


@pytest.mark.parametrize("ending", ["sleep 0.3", "sleep 100"])
def test_nothing_writes_after_the_exec_answered(
    api: httpx.Client, hostile: LiveServer, namespace: str, ending: str
) -> None:
    writers = "for j in 1 2 3 4; do (while :; do echo x >> workspace/f; done) & done"
    response = api.post("/v1/exec", json={"command": f"{writers}; {ending}"})
    assert response.status_code in (200, 408), response.text
    target = ns_dir(hostile, namespace) / "f"
    size = target.stat().st_size
    assert size > 0
    assert command_pids(hostile, namespace) == []
    time.sleep(0.3)  # give a straggler the chance to show itself; not a timing assertion
    assert target.stat().st_size == size


def test_memory_limit(api: httpx.Client) -> None:
    over = LIMITS["exec_memory_mb"] * 3
    program = f"b = bytearray({over} * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('allocated')"
    response = api.post("/v1/exec", json={"command": f'python3 -c "{program}"'})
    assert response.status_code in (200, 408), response.text
    body = response.json()
    assert "allocated" not in body["stdout"]
    if response.status_code == 200:
        assert body["exit_code"] != 0
    _still_responsive(api)
    under = api.post(
        "/v1/exec", json={"command": "python3 -c \"b = bytearray(16 * 1024 * 1024); print('small ok')\""}
    )
    assert under.json()["stdout"] == "small ok\n"


def test_file_size_limit(api: httpx.Client, hostile: LiveServer, namespace: str) -> None:
    cap = LIMITS["exec_file_mb"] * MIB
    response = api.post("/v1/exec", json={"command": "head -c 3M /dev/zero > workspace/big.bin; echo rc=$?"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "rc=0" not in body["stdout"]
    assert (ns_dir(hostile, namespace) / "big.bin").stat().st_size <= cap
    ok = api.post("/v1/exec", json={"command": "head -c 100K /dev/zero > workspace/small.bin && echo ok"})
    assert ok.json()["stdout"] == "ok\n"


def test_stdin_over_the_limit_is_422(api: httpx.Client) -> None:
    body = assert_problem(api.post("/v1/exec", json={"command": "wc -c", "stdin": "x" * (MIB + 1)}), 413)
    assert isinstance(body["detail"], str)


def test_cpu_seconds_are_capped_per_command_not_on_the_warm_agent(
    api: httpx.Client, hostile: LiveServer
) -> None:
    # The agent lives for many calls: RLIMIT_CPU on it would add up until it died. Each
    # command's shell gets the limit instead (its parent, the agent, has none).
    response = api.post("/v1/exec", json={"command": "ulimit -t; grep 'Max cpu time' /proc/$PPID/limits"})
    assert response.status_code == 200, response.text
    own, parent = response.json()["stdout"].splitlines()
    assert own == str(hostile.settings.exec_cpu_s)
    assert parent.split()[3:5] == ["unlimited", "unlimited"]
