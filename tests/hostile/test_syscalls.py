"""What a sandboxed command may ask of the kernel: no user namespaces, and a seccomp filter that
refuses what Docker's default profile refuses, while ordinary tools keep working."""

from __future__ import annotations

import json

import httpx
import pytest


def _run(http: httpx.Client, command: str) -> dict[str, object]:
    response = http.post("/v1/exec", json={"command": command})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


# Each call succeeds for an unprivileged process without a filter (checked on this kernel before
# the filter existed), so EPERM here is the filter's doing. ctypes' syscall() returns -1/errno.
_SYSCALLS = r"""
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
NR = {"keyctl": 250, "add_key": 248, "io_uring_setup": 425, "personality": 135, "unshare": 272,
      "clone3": 435}
def call(name, *args):
    ctypes.set_errno(0)
    result = libc.syscall(NR[name], *args)
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]
params = ctypes.create_string_buffer(120)
out = {
    "keyctl": call("keyctl", 0, ctypes.c_long(-3), 0),  # KEYCTL_GET_KEYRING_ID, session keyring
    "add_key": call("add_key", b"user", b"trove-test", b"x", 1, ctypes.c_long(-3)),
    "io_uring_setup": call("io_uring_setup", 1, params),
    "personality": call("personality", 0x0040000),  # ADDR_NO_RANDOMIZE
    "personality_linux": call("personality", 0),
    "unshare_net": call("unshare", 0x40000000),
    "clone3": call("clone3", 0, 0),
}
try:
    socket.socket(38, socket.SOCK_SEQPACKET)  # AF_ALG
    out["af_alg"] = "ok"
except OSError as exc:
    out["af_alg"] = errno.errorcode[exc.errno]
print(json.dumps(out))
"""


def test_sandbox_runs_under_a_seccomp_filter(api: httpx.Client) -> None:
    body = _run(api, "grep '^Seccomp:' /proc/self/status")
    assert str(body["stdout"]).split() == ["Seccomp:", "2"], body


@pytest.mark.parametrize("command", ["unshare -Ur true", "unshare -U true", "unshare -n true"])
def test_no_nested_namespaces(api: httpx.Client, command: str) -> None:
    body = _run(api, command)
    assert body["exit_code"] != 0, body
    assert "Operation not permitted" in str(body["stderr"]), body


def test_filtered_syscalls_are_refused(api: httpx.Client) -> None:
    assert api.post("/write", json={"path": "calls.py", "content": _SYSCALLS}).status_code == 200
    body = _run(api, "python3 /workspace/calls.py")
    assert body["exit_code"] == 0, body
    result = json.loads(str(body["stdout"]))
    assert result == {
        "keyctl": "EPERM",
        "add_key": "EPERM",
        "io_uring_setup": "EPERM",
        "personality": "EPERM",
        "personality_linux": "ok",
        "unshare_net": "EPERM",
        "clone3": "ENOSYS",  # as Docker: libc falls back to clone(), whose flags the filter sees
        "af_alg": "EPERM",
    }, result


@pytest.mark.parametrize(
    "command",
    [
        "bash -c 'echo ok' && sh -c 'echo ok'",
        "python3 -c 'import subprocess, threading; print(subprocess.run([\"true\"]).returncode)'",
        "git init -q /tmp/r && git -C /tmp/r -c user.name=a -c user.email=a@b commit -q --allow-empty -m x",
        "curl --version | head -1",
        "tar czf /tmp/t.tgz -C /usr/share/doc bash && tar tzf /tmp/t.tgz | head -1",
        "python3 -m pip --version",
        "sleep 0.1 & wait; ps ax | head -3 >/dev/null; echo done",
    ],
)
def test_ordinary_tools_still_work(api: httpx.Client, command: str) -> None:
    body = _run(api, command)
    assert body["exit_code"] == 0, body
