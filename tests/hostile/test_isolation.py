"""What a sandbox can see: its own namespace at /workspace, read-only system dirs, nothing else."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.hostile.helpers import ns_dir, ns_uid, raw_client
from tests.support.server import LiveServer


def _run(http: httpx.Client, command: str) -> dict[str, object]:
    response = http.post("/v1/exec", json={"command": command})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _host_markers(server: LiveServer) -> list[str]:
    """Host-side names that must never appear in sandbox output."""
    runtime = server.ctx.runtime
    return [
        str(server.data_dir.resolve()),
        str(runtime.root.parent),  # type: ignore[attr-defined]
        str(runtime.root),  # type: ignore[attr-defined]
        server.workspace_id,
        "trove.db",
    ]


@pytest.mark.parametrize(
    "command",
    [
        "ls -la /",
        "cat /proc/self/mountinfo",
        "cat /proc/mounts",
        "ls -la /workspace /tmp /run /proc/self/root/",
        "pwd; echo $HOME; env",
        "find / -maxdepth 3 -not -path '/proc/*' -not -path '/usr/*' -not -path '/sys/*' 2>/dev/null",
        "readlink -f /workspace workspace; stat -c %n workspace",
    ],
)
def test_no_host_path_is_visible(api: httpx.Client, hostile: LiveServer, command: str) -> None:
    assert api.post("/write", json={"path": "x.txt", "content": "x"}).status_code == 200
    body = _run(api, command)
    output = f"{body['stdout']}{body['stderr']}"
    for marker in _host_markers(hostile):
        assert marker not in output, (marker, output[:2000])


def test_sandbox_cannot_read_secrets(api: httpx.Client, hostile: LiveServer) -> None:
    body = _run(api, "cat /etc/shadow; echo rc=$?")
    assert "rc=0" not in str(body["stdout"])
    assert "root:" not in str(body["stdout"])
    db = hostile.data_dir.resolve() / "trove.db"
    for path in (db, hostile.data_dir.resolve(), hostile.ctx.runtime.root):  # type: ignore[attr-defined]
        probe = _run(api, f"ls -la {path}; cat {path}; echo rc=$?")
        assert "rc=0" not in str(probe["stdout"])
        assert "SQLite" not in str(probe["stdout"])


def test_sandbox_cannot_see_other_namespaces(hostile: LiveServer, namespace: str) -> None:
    secret = "s3cret-" + secrets.token_hex(6)
    name = "victim-file-" + secrets.token_hex(4)
    other = namespace + "-victim"
    with raw_client(hostile, other) as victim:
        assert victim.post("/write", json={"path": f"{name}.txt", "content": secret}).status_code == 200
    with raw_client(hostile, namespace) as http:
        body = _run(
            http,
            f"cat {ns_dir(hostile, other)}/{name}.txt 2>&1; ls {ns_dir(hostile, other)} 2>&1; "
            f"cat ../{other}/{name}.txt 2>&1; ls /workspace/.. 2>&1; "
            "find / -path /proc -prune -o -path /usr -prune -o -path /sys -prune "
            f"-o -name '{name}*' -print 2>/dev/null; "
            "echo end",
        )
    out = str(body["stdout"])
    assert secret not in out
    assert not [line for line in out.splitlines() if line.startswith("/") or line == f"{name}.txt"], out
    assert out.endswith("end\n")


def test_sandbox_runs_as_the_namespace_uid(api: httpx.Client, hostile: LiveServer, namespace: str) -> None:
    body = _run(api, "touch workspace/mine; id -u; cat /proc/self/status | grep -i '^cap'")
    uid = ns_uid(hostile, namespace)
    assert uid != 0
    assert (ns_dir(hostile, namespace) / "mine").stat().st_uid == uid
    caps = [
        line.split()[1] for line in str(body["stdout"]).splitlines() if line.startswith(("CapEff", "CapPrm"))
    ]
    assert caps, body["stdout"]
    assert all(int(c, 16) == 0 for c in caps), body["stdout"]
    assert ns_dir(hostile, namespace).stat().st_mode & 0o077 == 0  # other tenants cannot enter


def test_system_dirs_are_read_only(api: httpx.Client) -> None:
    body = _run(api, "touch /usr/trove-x /etc/trove-x 2>&1; echo rc=$?; ls /usr/trove-x 2>&1")
    assert "rc=0" not in str(body["stdout"])
