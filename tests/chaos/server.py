"""`trove-server serve` as a child process the chaos cases can SIGKILL and restart on the same data.

The harness only observes: it reads what the API answers (events, files) and what lies on disk
under the data dir, and never assumes how the server keeps its promises.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.invariants import Blob

SERVE = str(Path(sys.executable).with_name("trove-server"))
KEYS_FILE = "first-run-keys.txt"
READY_TIMEOUT_S = 90.0
# Names a write or restore in progress uses; none may be left behind after a restart.
TEMP_MARKERS = ("upload-", "restore-", ".tmp", ".partial", ".trove-tmp")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_data_dir(prefix: str) -> Path:
    """A data dir sandbox uids can traverse (its parents are /tmp, 1777)."""
    path = Path(tempfile.mkdtemp(prefix=f"trove-chaos-{prefix}-", dir="/tmp"))
    path.chmod(0o711)
    return path


@dataclass
class Keys:
    workspace_id: str
    admin: str
    workspace: str


@dataclass
class Server:
    """One data dir and port; ``start``/``kill``/``restart`` keep both."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    keys: Keys | None = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TROVE_")}
        full_env.update(
            TROVE_DATA_DIR=str(self.data_dir),
            TROVE_PORT=str(self.port),
            TROVE_HOST="127.0.0.1",
            TROVE_LOG_LEVEL="warning",
            **self.env,
        )
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen([SERVE, "serve"], env=full_env, stdout=log, stderr=log)
        self._wait_ready()
        if self.keys is None:
            self.keys = read_keys(self.data_dir, self.base_url)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"trove-server exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"trove-server not ready after {READY_TIMEOUT_S:.0f} s: {self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as in a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def rss_kib(self) -> int | None:
        if self.pid is None:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    # -- what a client sees ---------------------------------------------------------------

    def http(self, namespace: str | None = None, *, admin: bool = False, timeout: float = 30) -> httpx.Client:
        assert self.keys is not None
        headers = {"Authorization": f"Bearer {self.keys.admin if admin else self.keys.workspace}"}
        if namespace is not None:
            headers["X-Namespace"] = namespace
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def events(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every event of the workspace (optionally one namespace), oldest first."""
        assert self.keys is not None
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        if namespace is not None:
            params["namespace"] = namespace
        with self.http(admin=True) as client:
            for _ in range(1000):
                page = client.get(f"/v1/workspaces/{self.keys.workspace_id}/events", params=params)
                page.raise_for_status()
                body = page.json()
                found.extend(body["events"])
                if not body.get("next_cursor"):
                    break
                params["cursor"] = body["next_cursor"]
        return list(reversed(found))

    # -- what lies on disk ----------------------------------------------------------------

    def namespace_dir(self, namespace: str) -> Path:
        """Where a namespace's files lie: today's layout, else the directory found by its names."""
        assert self.keys is not None
        usual = self.data_dir / "namespaces" / self.keys.workspace_id / namespace
        if usual.is_dir():
            return usual
        for candidate in self.data_dir.rglob(namespace):
            if candidate.is_dir() and self.keys.workspace_id in candidate.parts:
                return candidate
        return usual

    def files_on_disk(self, namespace: str) -> dict[str, Blob]:
        """Regular files of a namespace, relative path -> content digest (``.trove/`` left out)."""
        root = self.namespace_dir(namespace)
        found: dict[str, Blob] = {}
        if not root.is_dir():
            return found
        for path in root.rglob("*"):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(".trove/") or not path.is_file() or path.is_symlink():
                continue
            with contextlib.suppress(OSError):
                found[rel] = _digest(path)
        return found

    def leftover_temp_files(self) -> list[str]:
        """Files under a temp name (uploads, restores) in the data dir; empty temp dirs do not count."""
        leftovers = []
        for path in self.data_dir.rglob("*"):
            rel = path.relative_to(self.data_dir)
            named = any(marker in part for part in rel.parts for marker in TEMP_MARKERS)
            if named and (path.is_file() or path.name.startswith(("upload-", "restore-"))):
                leftovers.append(rel.as_posix())
        return sorted(leftovers)


def _digest(path: Path) -> Blob:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return Blob(size, digest.hexdigest())


def read_keys(data_dir: Path, base_url: str) -> Keys:
    found = [data_dir / KEYS_FILE] if (data_dir / KEYS_FILE).exists() else sorted(data_dir.rglob(KEYS_FILE))
    if not found:
        raise RuntimeError(f"no {KEYS_FILE} under {data_dir} after the first start")
    text = found[0].read_text()
    admin = next(line.split()[-1] for line in text.splitlines() if line.startswith("Admin key"))
    workspace = next(line.split()[-1] for line in text.splitlines() if line.startswith("Workspace key"))
    me = httpx.get(f"{base_url}/v1/me", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    me.raise_for_status()
    return Keys(workspace_id=me.json()["workspace_id"], admin=admin, workspace=workspace)


@contextmanager
def running(
    prefix: str, *, data_dir: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A started server on a fresh (or given) data dir; stopped, and its fresh data removed, after."""
    own = data_dir is None
    server = Server(data_dir=data_dir or make_data_dir(prefix), env=dict(env or {}))
    try:
        server.start()
        yield server
    finally:
        server.kill()
        if own and os.environ.get("CHAOS_KEEP_DATA") != "1":
            shutil.rmtree(server.data_dir, ignore_errors=True)
            server.log_path.unlink(missing_ok=True)
