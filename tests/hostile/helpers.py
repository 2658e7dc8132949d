"""Helpers for the hostile suite: raw clients, problem+json checks, host-side probes."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.server import LiveServer
from trove_api.runtimes.local.spares import SPARES_DIR

KIB = 1024
MIB = 1024 * KIB

# Small limits, so every cap is reached quickly and cheaply.
LIMITS = {
    "exec_timeout_s": 2,
    "exec_output_bytes": 64 * KIB,
    "exec_pids": 64,
    "exec_memory_mb": 128,
    "exec_file_mb": 1,
    "upload_max_bytes": 256 * KIB,
    "write_max_bytes": 32 * KIB,
    "json_body_max_bytes": 128 * KIB,
}


def raw_client(server: LiveServer, namespace: str | None = None, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key or server.workspace_key}"}
    if namespace is not None:
        headers["X-Namespace"] = namespace
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=60)


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    """The response is a problem+json error the official client can show."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    if response.request.method == "HEAD":  # no body to look at
        assert response.headers["x-request-id"]
        return {}
    body = response.json()
    assert isinstance(body, dict)
    for member in ("detail", "code", "request_id"):
        assert isinstance(body.get(member), str), body
        assert body[member], body
    assert response.headers["x-request-id"] == body["request_id"]
    assert body.get("status") == status
    if code is not None:
        assert body["code"] == code, body
    return body


def ns_dir(server: LiveServer, namespace: str) -> Path:
    """The namespace's directory on the host."""
    root: Path = server.ctx.runtime.root  # type: ignore[attr-defined]
    return root / server.workspace_id / namespace


def in_spares_folder(server: LiveServer, path: Path) -> bool:
    """Whether ``path`` is the runtime's folder of spare sandboxes' directories or in it.

    Tree scans skip exactly that folder: the server makes and removes spares there on its own
    schedule; it is server-owned (0711, each spare's directory 0700 for a uid no namespace has
    yet), never inside a namespace, so no sandbox call can write there."""
    root: Path = server.ctx.runtime.root  # type: ignore[attr-defined]
    folders = {root / SPARES_DIR, root.resolve() / SPARES_DIR, server.data_dir / "namespaces" / SPARES_DIR}
    return any(path == folder or folder in path.parents for folder in folders)


def ns_uid(server: LiveServer, namespace: str) -> int:
    return ns_dir(server, namespace).stat().st_uid


TEMP_PREFIXES = (".trove-upload-", ".trove-restore-", ".trove-old-", ".trove-new-")


def temp_files(server: LiveServer) -> list[str]:
    """Uploads' and restores' temp files anywhere in any namespace (the agent stages beside the
    target), and whatever is in the API's old staging directory."""
    staging: Path = server.ctx.runtime.staging  # type: ignore[attr-defined]
    base = staging.parent
    found = [str(p) for p in staging.iterdir()]
    for top in (base / "namespaces", base / "mounts"):
        if top.is_dir():
            found += [str(p) for p in top.rglob(".trove-*") if p.name.startswith(TEMP_PREFIXES)]
    return found


def host_pids_of_uid(uid: int) -> list[int]:
    """Live host processes whose real uid is ``uid``.

    Zombies and tasks in the middle of exiting (their memory already released, so they can
    run no more user code) are not counted: the kernel finishes those on its own schedule.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        real_uid = int(fields.get("Uid", "-1").split()[0])
        exiting = "VmSize" not in fields or fields.get("State", "").strip().startswith(("Z", "X"))
        if real_uid == uid and not exiting:
            found.append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def _ns_pid(pid: int) -> int | None:
    """``pid`` as its own pid namespace numbers it (the last NSpid field)."""
    try:
        status = (Path("/proc") / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def _sandbox_parts(server: LiveServer, namespace: str) -> tuple[list[int], list[int]]:
    """(bubblewrap and its pid 1, the agent) of the namespace's warm sandbox, as host pids."""
    warm = server.ctx.runtime.sandboxes.warm  # type: ignore[attr-defined]
    sandbox = warm.get(f"{server.workspace_id}.{namespace}")
    if sandbox is None or not sandbox.session.hello.done():
        return [], []
    outer = sandbox.proc.pid
    inits = _children(outer)
    agent = sandbox.session.hello.result()["pid"]
    return [outer, *inits], [pid for init in inits for pid in _children(init) if _ns_pid(pid) == agent]


def sandbox_pids(server: LiveServer, namespace: str) -> set[int]:
    """The warm sandbox's own processes: bubblewrap, its pid 1, the agent and the agent's idle
    call supervisors (forks of the agent: the same command line), none of a command's."""
    wrappers, agents = _sandbox_parts(server, namespace)
    supervisors = [
        child for agent in agents for child in _children(agent) if _cmdline(child) == _cmdline(agent)
    ]
    return {*wrappers, *agents, *supervisors}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def agent_pid(server: LiveServer, namespace: str) -> int:
    """The host pid of the namespace's warm trove-agent."""
    _, (pid,) = _sandbox_parts(server, namespace)
    return pid


def command_pids(server: LiveServer, namespace: str) -> list[int]:
    """Live host processes of the namespace's uid that commands started (the sandbox's own are not)."""
    own = sandbox_pids(server, namespace)
    return [pid for pid in host_pids_of_uid(ns_uid(server, namespace)) if pid not in own]


def exec_json(http: httpx.Client, command: str, **extra: object) -> httpx.Response:
    return http.post("/v1/exec", json={"command": command, **extra})
