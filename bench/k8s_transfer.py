"""Upload/read throughput through the API vs a raw exec stream into the same pod (part of bench-k8s).

Each round runs, back to back: the official sync client, the official async client, and a raw
Python-client exec stream (``head -c N > file`` / ``cat file``), so all three see the same
moment of a noisy two-core node; the figures are medians over the rounds. The API server's
CPU seconds per transfer come from its /proc entry.

One more baseline, for the sync client: its upload into a null sink on loopback (a socket that
discards the body). httpcore's sync writer re-slices the unsent rest of the body after every
partial ``send()``, copying and faulting in up to ~2.5 GB per 100 MB upload whatever the server
does; that ceiling bounds what any server can reach with this client on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.stream import stream
from trove_sdk import AsyncTroveClient, TroveClient
from websocket import ABNF

from bench.common import MB, ratio

SIZE = 100 * MB
ROUNDS = 5


def raw_upload_mbps(core: client.CoreV1Api, namespace: str, pod: str) -> float:
    block = os.urandom(1 << 20)
    started = time.monotonic()
    ws = stream(
        core.connect_get_namespaced_pod_exec, pod, namespace, container="sandbox",
        command=["sh", "-c", f"head -c {SIZE} > /workspace/raw.bin; echo done"],
        stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False, binary=True,
    )  # fmt: skip
    sent = 0
    while sent < SIZE:
        piece = block[: min(len(block), SIZE - sent)]
        ws.write_stdin(piece)
        sent += len(piece)
    while ws.is_open():
        ws.update(timeout=1)
        if b"done" in ws.peek_stdout():
            break
    ws.close()
    return SIZE / MB / (time.monotonic() - started)


def raw_read_mbps(core: client.CoreV1Api, namespace: str, pod: str) -> float:
    """``cat`` through a fresh exec stream, frames read straight off the client's websocket."""
    started = time.monotonic()
    ws = stream(
        core.connect_get_namespaced_pod_exec, pod, namespace, container="sandbox",
        command=["cat", "/workspace/raw.bin"],
        stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False, binary=True,
    )  # fmt: skip
    got = 0
    while True:
        opcode, frame = ws.sock.recv_data_frame(True)
        if opcode == ABNF.OPCODE_CLOSE:
            break
        if frame.data and frame.data[0] == 1:
            got += len(frame.data) - 1
    ws.close()
    assert got == SIZE, got
    return SIZE / MB / (time.monotonic() - started)


@contextlib.contextmanager
def null_sink() -> Iterator[str]:
    """An HTTP/1.1 server on loopback that reads each request body and throws it away."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while head := _read_head(reader):
                length = int(head.get("content-length", "0"))
                while length:
                    length -= len(reader.read1(min(length, 1 << 20)))
                body = b'{"path": "workspace/sink.bin", "size_bytes": 0}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


def _read_head(reader: Any) -> dict[str, str] | None:
    if not reader.readline():
        return None
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(action: Callable[[], object], server_pid: int) -> tuple[float, float]:
    """(MB/s, API server CPU seconds) of one 100 MB transfer."""
    cpu = _cpu_seconds(server_pid)
    started = time.perf_counter()
    action()
    return SIZE / MB / (time.perf_counter() - started), _cpu_seconds(server_pid) - cpu


def run(
    core: client.CoreV1Api, namespace: str, pod: str, base_url: str, key: str, server_pid: int
) -> dict[str, Any]:
    payload = os.urandom(SIZE)
    sync = TroveClient(api_key=key, namespace="bench", base_url=base_url, timeout=120)
    loop = asyncio.new_event_loop()
    async_client = AsyncTroveClient(api_key=key, namespace="bench", base_url=base_url, timeout=120)
    samples: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    def upload_async() -> None:
        loop.run_until_complete(async_client.upload("workspace/big.bin", payload))

    def read_sync() -> None:
        assert sync.read_bytes("workspace/big.bin") == payload

    def read_async() -> None:
        assert loop.run_until_complete(async_client.read_bytes("workspace/big.bin")) == payload

    def measured(name: str, action: Callable[[], object]) -> None:
        mbps, cpu = _timed(action, server_pid)
        keep(name, mbps)
        keep(f"{name}_cpu", cpu)

    try:
        sync.upload("workspace/big.bin", payload)  # warm both paths once, unmeasured
        read_async()
        raw_upload_mbps(core, namespace, pod)
        with null_sink() as sink_url:
            ceiling = TroveClient(api_key=key, namespace="bench", base_url=sink_url, timeout=120)
            for _ in range(ROUNDS):
                measured("up_sync", lambda: sync.upload("workspace/big.bin", payload))
                measured("up_async", upload_async)
                keep("up_raw", raw_upload_mbps(core, namespace, pod))
                started = time.perf_counter()
                ceiling.upload("workspace/sink.bin", payload)
                keep("up_sync_ceiling", SIZE / MB / (time.perf_counter() - started))
                measured("read_sync", read_sync)
                measured("read_async", read_async)
                keep("read_raw", raw_read_mbps(core, namespace, pod))
            ceiling.close()
    finally:
        sync.close()
        loop.run_until_complete(async_client.aclose())
        loop.close()
    return summary(samples)


def summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    med = {name: statistics.median(values) for name, values in samples.items()}

    def figures(kind: str) -> dict[str, Any]:
        raw = med[f"{kind}_raw"]
        return {
            "api_async_client": round(med[f"{kind}_async"], 1),
            "api_sync_client": round(med[f"{kind}_sync"], 1),
            "raw_exec_stream": round(raw, 1),
            "ratio_async_client": ratio(med[f"{kind}_async"], raw),
            "ratio_sync_client": ratio(med[f"{kind}_sync"], raw),
            "api_cpu_s_per_100mb": round(
                statistics.median(samples[f"{kind}_sync_cpu"] + samples[f"{kind}_async_cpu"]), 3
            ),
            "rounds": {
                name: [round(v, 1) for v in values]
                for name, values in samples.items()
                if name.startswith(f"{kind}_") and not name.endswith("_cpu")
            },
        }

    upload = figures("up")
    upload["sync_client_into_null_sink"] = round(med["up_sync_ceiling"], 1)
    return {"upload_mbps": upload, "read_mbps": figures("read")}
