"""The local agent's descriptor socket (``runtimes/channel/fds.py``) is the agent's alone: no
command holds it or can reach it, and files still move through it with the agent in charge of
the paths (an escaping path is refused before any descriptor is sent)."""

from __future__ import annotations

import os
import stat

import httpx
import pytest

from tests.hostile.helpers import agent_pid, assert_problem, exec_json, ns_dir
from tests.support.server import LiveServer
from trove_api.runtimes.channel import fds


@pytest.fixture(autouse=True)
def every_upload_through_a_descriptor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hostile server's uploads are small (256 KiB cap), and small ones go framed by default."""
    monkeypatch.setattr(fds, "HANDED_MIN_BYTES", 0)


# Every descriptor a command can see, in every process it can look into: its sockets.
SOCKETS_IN_REACH = r"""
for f in /proc/[0-9]*/fd/*; do
  target=$(readlink "$f" 2>/dev/null) || continue
  case "$target" in socket:*) echo "$f $target" ;; esac
done
echo done
"""


def _agent_sockets(pid: int) -> list[int]:
    found = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if stat.S_ISSOCK(os.stat(f"/proc/{pid}/fd/{name}").st_mode):
                found.append(int(name))
        except OSError:
            continue
    return found


def test_no_command_holds_or_reaches_the_descriptor_socket(
    api: httpx.Client, hostile: LiveServer, namespace: str
) -> None:
    assert api.put("/files/up.bin", content=b"x" * 1000).status_code == 200
    # From the host: the agent does hold its socket (so the probe below looks for something real).
    assert _agent_sockets(agent_pid(hostile, namespace))
    seen = exec_json(api, SOCKETS_IN_REACH + "sleep 0.2 & wait")
    assert seen.status_code == 200, seen.text
    assert seen.json()["stdout"] == "done\n", seen.json()["stdout"]


def test_files_move_through_the_socket_and_paths_stay_the_agents_to_resolve(
    api: httpx.Client, hostile: LiveServer, namespace: str
) -> None:
    data = os.urandom(200 * 1024)
    assert api.put("/files/dir/blob.bin", content=data).status_code == 200
    assert (ns_dir(hostile, namespace) / "dir" / "blob.bin").read_bytes() == data
    assert api.get("/files/dir/blob.bin").content == data
    assert api.get("/files/dir/blob.bin", headers={"Range": "bytes=10-19"}).content == data[10:20]
    # A link out of the namespace: resolved by the agent, refused before anything is handed over.
    made = exec_json(api, "ln -s /etc workspace/out && ln -s /etc/passwd workspace/pw && echo ok")
    assert made.json()["stdout"] == "ok\n", made.text
    assert_problem(api.put("/files/out/x", content=b"x"), 400, "path_rejected")
    assert_problem(api.get("/files/pw"), 400, "path_rejected")
    # The channel stayed up: nothing the agent sent was refused.
    assert api.get("/files/dir/blob.bin").content == data
