"""Several `trove-server serve` processes on one PostgreSQL database and one data dir (scale-out).

The replicas start at the same moment, so every start exercises concurrent migrations and the
first-start bootstrap race. The keys come from the first-run file the bootstrapping replica
wrote into the shared data dir.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.postgres import free_port
from tests.support.server import make_data_dir

SERVE = str(Path(sys.executable).with_name("trove-server"))
FAST_POLLS = {
    # Background loops look often, so cross-replica tests finish quickly (no timing asserts).
    "TROVE_EVENTS_POLL_INTERVAL_S": "0.2",
    "TROVE_WEBHOOK_POLL_INTERVAL_S": "0.2",
    "TROVE_WEBHOOK_ALLOW_PRIVATE": "true",
    "TROVE_WEBHOOK_BACKOFF_BASE_S": "0.2",
    "TROVE_SNAPSHOT_DAILY": "false",
    "TROVE_LOG_LEVEL": "warning",
}


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    base_url: str
    logs: Path

    @property
    def stderr(self) -> str:
        return (self.logs / "stderr").read_text(errors="replace")


@dataclass
class Replicas:
    replicas: list[Replica]
    database_url: str
    data_dir: Path
    workspace_id: str
    admin_key: str
    workspace_key: str

    def __getitem__(self, index: int) -> Replica:
        return self.replicas[index]

    def __len__(self) -> int:
        return len(self.replicas)

    def env(self) -> dict[str, str]:
        """The environment of a maintenance command (``trove-server snapshots``) on this deployment."""
        return replica_env(self.database_url, self.data_dir)


def replica_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TROVE_")},
        **FAST_POLLS,
        "TROVE_DATA_DIR": str(data_dir),
        "TROVE_DATABASE_URL": database_url,
        **extra,
    }


def _spawn(database_url: str, data_dir: Path, extra: dict[str, str]) -> Replica:
    port = free_port()
    logs = Path(tempfile.mkdtemp(prefix="trove-replica-logs-"))
    env = replica_env(database_url, data_dir, TROVE_PORT=str(port), **extra)
    with (logs / "stdout").open("wb") as out, (logs / "stderr").open("wb") as err:
        proc = subprocess.Popen([SERVE, "serve"], env=env, stdout=out, stderr=err)
    return Replica(proc, f"http://127.0.0.1:{port}", logs)


def _wait_ready(replica: Replica, deadline: float) -> None:
    while True:
        assert replica.proc.poll() is None, f"replica exited:\n{replica.stderr}"
        try:
            if httpx.get(f"{replica.base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"replica did not become ready:\n{replica.stderr}"
        time.sleep(0.1)


def _stop(replica: Replica) -> None:
    if replica.proc.poll() is None:
        replica.proc.send_signal(signal.SIGINT)
        try:
            replica.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            replica.proc.kill()
            replica.proc.wait()
    shutil.rmtree(replica.logs, ignore_errors=True)


def _first_run_keys(data_dir: Path) -> tuple[str, str, str]:
    text = (data_dir / "first-run-keys.txt").read_text()
    workspace = re.search(r"Trove workspace: (\S+)", text)
    admin = re.search(r"Admin key[^:]*: (\S+)", text)
    key = re.search(r"Workspace key[^:]*: +(\S+)", text)
    assert workspace, text
    assert admin, text
    assert key, text
    return workspace.group(1), admin.group(1), key.group(1)


@contextmanager
def start_replicas(database_url: str, count: int = 2, **extra: str) -> Iterator[Replicas]:
    """``count`` replicas started together on ``database_url`` and one fresh data dir."""
    data_dir = make_data_dir()
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, data_dir, True)
        replicas = []
        for _ in range(count):
            replica = _spawn(database_url, data_dir, extra)
            stack.callback(_stop, replica)
            replicas.append(replica)
        deadline = time.monotonic() + 60
        for replica in replicas:
            _wait_ready(replica, deadline)
        workspace_id, admin_key, workspace_key = _first_run_keys(data_dir)
        yield Replicas(replicas, database_url, data_dir, workspace_id, admin_key, workspace_key)
