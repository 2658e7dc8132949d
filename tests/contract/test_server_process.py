"""`trove-server serve` as a real process: first-run keys, JSON logs with request ids, graceful stop."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from trove_sdk import TroveClient

from tests.support.server import _free_port, make_data_dir
from trove_core.names import ADMIN_KEY_PREFIX, WORKSPACE_KEY_PREFIX, new_api_key

SERVE = str(Path(sys.executable).with_name("trove-server"))


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    base_url: str
    out: Path
    err: Path

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()


@contextmanager
def serve(data_dir: Path, command: Sequence[str] = (SERVE, "serve"), **env: str) -> Iterator[Served]:
    """The server as a child process; its output goes to files (a full pipe would stall it)."""
    port = _free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TROVE_")},
        "TROVE_DATA_DIR": str(data_dir),
        "TROVE_PORT": str(port),
        **env,
    }
    logs = Path(tempfile.mkdtemp(prefix="trove-serve-logs-"))
    out, err = logs / "stdout", logs / "stderr"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        proc = subprocess.Popen(list(command), env=full_env, stdout=out_file, stderr=err_file)
    base_url = f"http://127.0.0.1:{port}"
    served = Served(proc, base_url, out, err)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, served.stderr
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(logs, ignore_errors=True)


def _admin_key(data_dir: Path) -> str:
    text = (data_dir / "first-run-keys.txt").read_text()
    return next(line.split()[-1] for line in text.splitlines() if line.startswith("Admin key"))


def _keys(data_dir: Path) -> tuple[str, str]:
    text = (data_dir / "first-run-keys.txt").read_text()
    admin = next(line.split()[-1] for line in text.splitlines() if line.startswith("Admin key"))
    workspace = next(line.split()[-1] for line in text.splitlines() if line.startswith("Workspace key"))
    return admin, workspace


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir()
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_first_start_prints_keys_to_a_private_file_and_later_starts_point_to_it(data_dir: Path) -> None:
    with serve(data_dir) as first:
        admin, workspace = _keys(data_dir)
        base_url = first.base_url
        assert (data_dir / "first-run-keys.txt").stat().st_mode & 0o777 == 0o600
        me = httpx.get(f"{base_url}/v1/me", headers={"Authorization": f"Bearer {admin}"}).json()
        assert me["scope"] == "admin"
        assert me["workspace_id"].startswith("ws-")
        with TroveClient(api_key=workspace, namespace="first", base_url=base_url) as client:
            assert client.exec("echo ok") == "ok\n"
        first_out = first.stdout
    assert workspace in first_out
    assert "TroveClient(" in first_out
    with serve(data_dir) as second:
        second_out = second.stdout
    assert workspace not in second_out
    assert str((data_dir / "first-run-keys.txt").resolve()) in second_out


def _active_keys(base_url: str, admin: str) -> list[dict[str, object]]:
    headers = {"Authorization": f"Bearer {admin}"}
    workspace_id = httpx.get(f"{base_url}/v1/me", headers=headers).json()["workspace_id"]
    listing = httpx.get(f"{base_url}/v1/workspaces/{workspace_id}/keys", headers=headers)
    assert listing.status_code == 200, listing.text
    keys: list[dict[str, object]] = listing.json()["keys"]
    return keys


def test_with_json_logs_the_first_start_prints_no_key_and_mints_no_workspace_key(data_dir: Path) -> None:
    # JSON logs are collected and kept: the keys must stay in the 0600 file, out of the logs.
    with serve(data_dir, TROVE_LOG_FORMAT="json") as first:
        keys_file = data_dir / "first-run-keys.txt"
        assert keys_file.stat().st_mode & 0o777 == 0o600
        admin = _admin_key(data_dir)
        assert "Workspace key" not in keys_file.read_text()
        assert [k["scope"] for k in _active_keys(first.base_url, admin)] == ["admin"]
        output = first.stdout + first.stderr
    assert ADMIN_KEY_PREFIX not in output
    assert WORKSPACE_KEY_PREFIX not in output
    assert str(keys_file.resolve()) in output
    assert "kubectl exec" in output
    notices = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any("first start" in entry["message"] for entry in notices), output[-2000:]
    with serve(data_dir, TROVE_LOG_FORMAT="json") as second:
        again = second.stdout + second.stderr
    assert WORKSPACE_KEY_PREFIX not in again
    assert str(keys_file.resolve()) in again


def test_with_the_admin_key_from_the_environment_the_first_start_prints_no_key(data_dir: Path) -> None:
    # As the Helm chart runs it: TROVE_ADMIN_KEY from a Secret. Nothing to print, nothing to save.
    admin = new_api_key(admin=True)
    with serve(data_dir, TROVE_ADMIN_KEY=admin) as served:
        assert [k["scope"] for k in _active_keys(served.base_url, admin)] == ["admin"]
        output = served.stdout + served.stderr
    assert not (data_dir / "first-run-keys.txt").exists()
    assert admin not in output
    assert WORKSPACE_KEY_PREFIX not in output
    assert "TROVE_ADMIN_KEY" in output


def test_json_logs_carry_the_request_id(data_dir: Path) -> None:
    with serve(data_dir, TROVE_LOG_FORMAT="json") as served:
        admin = _admin_key(data_dir)
        response = httpx.get(f"{served.base_url}/v1/me", headers={"Authorization": f"Bearer {admin}"})
        request_id = response.headers["X-Request-Id"]
        deadline = time.monotonic() + 10
        while "/v1/me" not in served.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        stderr = served.stderr
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [e for e in entries if e.get("logger") == "trove.access" and e.get("path") == "/v1/me"]
    assert access, stderr[-2000:]
    assert access[0]["request_id"] == request_id
    assert access[0]["status"] == 200


# `trove-server serve` with one extra route that raises: a handler crash is a fault no real part
# produces on demand (each one found is fixed), so this test adds one; the rest is the real server.
CRASHING_SERVE = """
import sys
import trove_api.main
from trove_api.cli import main
plain_app = trove_api.main.create_app

def with_a_crashing_route(*args, **kwargs):
    app = plain_app(*args, **kwargs)

    async def crash():
        raise RuntimeError("deliberate crash for a log test")

    app.add_api_route("/test-crash", crash)
    return app

trove_api.main.create_app = with_a_crashing_route
sys.exit(main(["serve"]))
"""


def test_a_crash_log_line_never_carries_the_previous_requests_id(data_dir: Path) -> None:
    with serve(data_dir, [sys.executable, "-c", CRASHING_SERVE], TROVE_LOG_FORMAT="json") as served:
        admin = _admin_key(data_dir)
        port = int(served.base_url.rsplit(":", 1)[1])
        first = f"GET /v1/me HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin}\r\n\r\n"
        crash = "GET /test-crash HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        received = b""
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            # Pipelined: the server starts the second request from inside the first one.
            sock.sendall((first + crash).encode())
            while chunk := sock.recv(65536):
                received += chunk
        first_id, crash_id = (m.decode() for m in re.findall(rb"(?i)x-request-id: (\S+)\r\n", received))
        assert b"HTTP/1.1 500" in received, received
        deadline = time.monotonic() + 10
        while "Exception in ASGI application" not in served.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        stderr = served.stderr
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    crash_lines = [e for e in entries if "exception" in e]
    assert len(crash_lines) >= 2, stderr[-3000:]  # ours ("request … crashed") and uvicorn's
    assert {e.get("request_id") for e in crash_lines} == {crash_id}, crash_lines  # its own id
    carrying_first = [e["logger"] for e in entries if e.get("request_id") == first_id]
    assert carrying_first == ["trove.access"], stderr[-3000:]


def _read_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length body, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_a_line_logged_between_requests_carries_no_request_id(data_dir: Path) -> None:
    with serve(data_dir, TROVE_LOG_FORMAT="json") as served:
        admin = _admin_key(data_dir)
        headers = {"Authorization": f"Bearer {admin}"}
        workspace_id = httpx.get(f"{served.base_url}/v1/me", headers=headers).json()["workspace_id"]
        minted = httpx.post(
            f"{served.base_url}/v1/workspaces/{workspace_id}/keys", headers=headers, json={"name": "w"}
        )
        key = minted.json()["api_key"]
        port = int(served.base_url.rsplit(":", 1)[1])
        body = b"x" * (1 << 20)
        upload = (
            f"PUT /files/big.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n"
            f"X-Namespace: logs\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            # A body this large pauses reading; it resumes from inside the upload's request,
            # and what the connection logs next ran in a copy of that request's context.
            sock.sendall(upload)
            head = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
            upload_id = re.search(rb"(?i)x-request-id: (\S+)", head).group(1).decode()  # type: ignore[union-attr]
            sock.sendall(b"NOT HTTP\x01\r\n\r\n")
            while sock.recv(65536):
                pass
        deadline = time.monotonic() + 10
        while "refused by the HTTP parser" not in served.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        stderr = served.stderr
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    invalid = [e for e in entries if "refused by the HTTP parser" in e["message"]]
    assert invalid, stderr[-3000:]
    # The refusal carries the id of its own answer (in its message), never the upload's.
    assert all(e.get("request_id") and e["request_id"] in e["message"] for e in invalid), invalid
    assert upload_id not in {e.get("request_id") for e in invalid}, invalid
    assert [e["logger"] for e in entries if e.get("request_id") == upload_id] == ["trove.access"]


def test_sigterm_lets_an_exec_in_flight_finish(data_dir: Path) -> None:
    with serve(data_dir) as served:
        proc, base_url = served.proc, served.base_url
        _, workspace = _keys(data_dir)
        outcome: dict[str, object] = {}

        def run() -> None:
            with TroveClient(api_key=workspace, namespace="grace", base_url=base_url) as client:
                try:
                    outcome["stdout"] = client.exec("touch workspace/started; sleep 2; echo finished")
                except Exception as exc:
                    outcome["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        started = data_dir / "namespaces"
        deadline = time.monotonic() + 20
        while not list(started.glob("*/grace/started")):
            assert time.monotonic() < deadline, "the exec never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=60)
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert outcome.get("stdout") == "finished\n", outcome
