"""A 200 MB namespace round-trips through the S3 store with the server's peak RSS bounded.

The server runs as its own process (`trove-server serve`) so its peak resident set (VmHWM in
/proc/<pid>/status) measures the server alone: the tarball must stream, never sit in memory.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from trove_sdk import TroveClient

from tests.support.s3 import S3Server
from tests.support.server import make_data_dir

MIB = 1024 * 1024
HEADROOM = 100 * MIB


def _kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


@pytest.fixture
def process_server(s3: S3Server) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    data_dir = make_data_dir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROVE_")}
    env.update(
        TROVE_DATA_DIR=str(data_dir),
        TROVE_PORT=str(port),
        TROVE_SNAPSHOT_STORE="s3",
        TROVE_S3_ENDPOINT_URL=s3.endpoint_url,
        TROVE_S3_BUCKET="trove-memory",
        TROVE_S3_ACCESS_KEY_ID=s3.access_key_id,
        TROVE_S3_SECRET_ACCESS_KEY=s3.secret_access_key,
        TROVE_SNAPSHOT_DAILY="false",
        TROVE_LOG_LEVEL="warning",
    )
    command = Path(sys.executable).with_name("trove-server")
    process = subprocess.Popen(
        [str(command), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "trove-server exited"
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "trove-server did not start"
            time.sleep(0.2)
        keys = (data_dir / "first-run-keys.txt").read_text()
        key = re.search(r"Workspace key[^:]*:\s+(\S+)", keys)
        assert key is not None
        yield process, base_url, key.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)


def test_200_mb_round_trip_with_bounded_rss(process_server: tuple[subprocess.Popen[bytes], str, str]) -> None:
    process, base_url, key = process_server
    with TroveClient(api_key=key, namespace="big", base_url=base_url, timeout=600) as trove:
        # Warm every code path on a small namespace first, then take the idle baseline.
        trove.write("workspace/warm.txt", "warm")
        trove.restore_snapshot(trove.create_snapshot().snapshot_id)
        baseline = _kib(process.pid, "VmRSS")

        trove.exec("for i in 1 2 3 4; do head -c 52428800 /dev/urandom > workspace/part$i.bin; done")
        before = trove.exec("cd workspace && md5sum part*.bin")
        snap = trove.create_snapshot(label="200 MB")
        assert snap.size_bytes > 200 * MIB  # random data does not compress
        trove.exec("rm workspace/part1.bin && echo changed > workspace/part2.bin")
        assert trove.restore_snapshot(snap.snapshot_id) == 5
        assert trove.exec("cd workspace && md5sum part*.bin") == before

    peak = _kib(process.pid, "VmHWM")
    print(f"server RSS: idle {baseline / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB")
    assert peak < baseline + HEADROOM, f"peak RSS {peak / MIB:.0f} MiB vs idle {baseline / MIB:.0f} MiB"
