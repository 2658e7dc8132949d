"""A server killed with -9 mid-upload leaves its namespace mounted: the next start reuses the mount,
sweeps the half-written upload from the image, and unmounts at a clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.storage.disks import MIB, require_loop_mounts
from tests.storage.test_namespace_disk import _cleanup, _mount_count
from tests.support.replicas import _first_run_keys
from tests.support.server import _free_port, make_data_dir

SERVE = str(Path(sys.executable).with_name("trove-server"))


@contextmanager
def _serve(data_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TROVE_")},
        "TROVE_DATA_DIR": str(data_dir),
        "TROVE_PORT": str(port),
        "TROVE_NAMESPACE_DISK_MB": "16",
        "TROVE_SNAPSHOT_DAILY": "false",
        "TROVE_LOG_LEVEL": "warning",
    }
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([SERVE, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            yield proc, _wait_ready(proc, f"http://127.0.0.1:{port}", err)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, err: IO[bytes]) -> str:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            err.seek(0)
            pytest.fail(f"server exited: {err.read().decode(errors='replace')}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return base_url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.1)


def test_kill_9_mid_upload_then_restart(namespace: str) -> None:
    require_loop_mounts()
    data_dir = make_data_dir()
    try:
        with _serve(data_dir) as (proc, base_url):
            _, _, key = _first_run_keys(data_dir)
            headers = {"Authorization": f"Bearer {key}", "X-Namespace": namespace}
            http = httpx.Client(base_url=base_url, headers=headers, timeout=60)
            assert http.post("/write", json={"path": "kept.txt", "content": "kept"}).status_code == 200
            workspace_id = http.get("/v1/me").json()["workspace_id"]
            mountpoint = data_dir / "mounts" / workspace_id / namespace
            # The agent stages an upload beside its target, inside the image.
            root = mountpoint / "root"

            started = threading.Event()

            def body() -> Iterator[bytes]:
                yield b"h" * MIB
                started.set()
                time.sleep(3600)  # never finishes: the server is killed meanwhile

            def upload() -> None:
                with contextlib.suppress(httpx.HTTPError):
                    http.put("/files/half.bin", content=body())

            uploader = threading.Thread(target=upload, daemon=True)
            uploader.start()
            assert started.wait(30)
            deadline = time.monotonic() + 30
            while not list(root.glob(".trove-upload-*")):
                assert time.monotonic() < deadline, "the upload never reached the namespace"
                time.sleep(0.05)
            proc.kill()
            proc.wait()
            http.close()
        assert os.path.ismount(mountpoint)
        # The sandbox dies with the server; its agent may have dropped the temp file first.
        assert len(list(root.glob(".trove-upload-*"))) <= 1

        with _serve(data_dir) as (_, base_url):
            with httpx.Client(base_url=base_url, headers=headers, timeout=60) as again:
                assert again.get("/files/kept.txt").content == b"kept"
                assert again.get("/files/half.bin").status_code == 404
                assert ".trove-upload-" not in again.get("/v1/files").text
                assert again.post("/write", json={"path": "new.txt", "content": "n"}).status_code == 200
                answer = again.post("/v1/exec", json={"command": "cat workspace/new.txt"})
                assert answer.json()["stdout"] == "n"
            # The namespace's new agent swept it (no live upload holds its lock).
            deadline = time.monotonic() + 30
            while list(root.glob(".trove-upload-*")):
                assert time.monotonic() < deadline, "the cut-off upload was never swept"
                time.sleep(0.05)
            assert _mount_count(mountpoint) == 1
        assert not os.path.ismount(mountpoint)
    finally:
        _cleanup(data_dir)
