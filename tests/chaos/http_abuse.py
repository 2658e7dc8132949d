"""Raw-socket abuse of the HTTP layer: slowloris headers and upload bodies cut mid-way."""

from __future__ import annotations

import os
import socket
import statistics
import struct
import threading
import time
from dataclasses import dataclass

import httpx

from tests.chaos.report import CaseReport
from tests.chaos.server import Server, running

SLOW_CONNECTIONS = 40
SLOWLORIS_S = float(os.environ.get("CHAOS_SLOWLORIS_S", "40"))
CUT_UPLOADS = 8
DECLARED = 4 * 1024 * 1024
SENT = 1024 * 1024


@dataclass
class SlowConnection:
    sock: socket.socket
    opened: float
    closed_after: float | None = None
    answer: str = ""


def _poll_closed(conn: SlowConnection, now: float) -> None:
    """Did the server close (or answer and close)? Non-blocking: never waits on a live socket."""
    try:
        data = conn.sock.recv(4096, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return
    except OSError as exc:
        conn.closed_after, conn.answer = now - conn.opened, type(exc).__name__
        return
    if data:
        conn.answer = conn.answer or data.split(b"\r\n", 1)[0].decode(errors="replace")
        return
    conn.closed_after = now - conn.opened


def _normal_requests(server: Server, stop: threading.Event, results: list[float | None]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            ok = httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            ok = False
        results.append(time.monotonic() - started if ok else None)
        stop.wait(1.0)


def slowloris(report: CaseReport) -> None:
    with running("slowloris") as server:
        request_head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Slow: ".encode()
        conns: list[SlowConnection] = []
        for _ in range(SLOW_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(request_head)
            sock.setblocking(False)
            conns.append(SlowConnection(sock, time.monotonic()))
        stop = threading.Event()
        normal: list[float | None] = []
        prober = threading.Thread(target=_normal_requests, args=(server, stop, normal), daemon=True)
        prober.start()
        rss_before = server.rss_kib()
        deadline = time.monotonic() + SLOWLORIS_S
        try:
            while time.monotonic() < deadline and any(c.closed_after is None for c in conns):
                now = time.monotonic()
                for conn in conns:
                    if conn.closed_after is not None:
                        continue
                    _poll_closed(conn, now)
                    if conn.closed_after is None:
                        try:
                            conn.sock.send(b"a", socket.MSG_DONTWAIT)  # one header byte a second
                        except BlockingIOError:
                            pass
                        except OSError as exc:
                            conn.closed_after, conn.answer = now - conn.opened, type(exc).__name__
                time.sleep(1.0)
        finally:
            stop.set()
            prober.join(timeout=10)
            for conn in conns:
                conn.sock.close()
        closed = [c.closed_after for c in conns if c.closed_after is not None]
        answers = sorted({c.answer for c in conns if c.answer})
        report.fact(
            f"{SLOW_CONNECTIONS} connections trickling one header byte a second "
            f"for up to {SLOWLORIS_S:.0f} s: "
            f"{len(closed)} closed by the server"
            + (
                f" (after median {statistics.median(closed):.1f} s, max {max(closed):.1f} s)"
                if closed
                else ""
            )
            + f"; answers seen: {answers or 'none'}"
        )
        served = [t for t in normal if t is not None]
        report.fact(
            f"normal requests meanwhile: {len(served)}/{len(normal)} served"
            + (f", slowest {max(served) * 1000:.0f} ms" if served else "")
            + f"; server RSS {rss_before} -> {server.rss_kib()} KiB"
        )
        report.check("normal requests are served meanwhile", bool(normal) and len(served) == len(normal))
        report.check(
            f"the server closes connections that trickle headers (within {SLOWLORIS_S:.0f} s)",
            len(closed) == SLOW_CONNECTIONS,
            f"{SLOW_CONNECTIONS - len(closed)} of {SLOW_CONNECTIONS} still open after {SLOWLORIS_S:.0f} s",
        )


def _cut_upload(server: Server, namespace: str, path: str, *, reset: bool) -> None:
    assert server.keys is not None
    head = (
        f"PUT /files/{path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {server.keys.workspace}\r\nX-Namespace: {namespace}\r\n"
        f"Content-Length: {DECLARED}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        sock.sendall(b"c" * SENT)
        time.sleep(0.3)  # let the server stream part of the body to disk first
        if reset:
            # SO_LINGER 0: close() sends RST instead of FIN, as a crashed client's kernel does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def cut_bodies(report: CaseReport) -> None:
    namespace = "cut"
    old = b"old content\n"
    with running("cut") as server, server.http(namespace) as http:
        http.put("/files/victim.txt", content=old).raise_for_status()
        rss_before = server.rss_kib()
        paths = [f"cut/{n}.bin" for n in range(CUT_UPLOADS)] + ["victim.txt"]
        for n, path in enumerate(paths):
            _cut_upload(server, namespace, path, reset=n % 2 == 1)
        deadline = time.monotonic() + 10
        while server.leftover_temp_files() and time.monotonic() < deadline:
            time.sleep(0.2)
        leftovers = server.leftover_temp_files()
        disk = server.files_on_disk(namespace)
        visible = [p for p in paths[:-1] if p in disk or http.get(f"/files/{p}").status_code != 404]
        victim = http.get("/files/victim.txt")
        events = server.events(namespace)
        written = [e["data"]["path"] for e in events if e["type"] == "file.written"]
        healthy = http.get("/readyz").status_code == 200
        upload_after = http.put("/files/after.bin", content=b"x" * SENT).status_code
        report.fact(
            f"{len(paths)} uploads declaring {DECLARED // 1024} KiB, cut after {SENT // 1024} KiB "
            f"(half FIN, half RST; one over an existing file)"
        )
        report.fact(
            f"found: {len(visible)} cut files visible, "
            f"victim.txt {'intact' if victim.content == old else 'CHANGED'}, "
            f"{len(leftovers)} temp files after 10 s, file.written events {len(written)} "
            f"(1 expected: the victim's first write); readyz {'200' if healthy else 'failing'}, "
            f"a normal upload after: {upload_after}; RSS {rss_before} -> {server.rss_kib()} KiB"
        )
        report.check(
            "nothing half-written is visible", not visible and victim.content == old, f"{visible[:3]}"
        )
        report.check("no temp files leak", not leftovers, f"{len(leftovers)} left, e.g. {leftovers[:2]}")
        report.check("no event for a cut upload", len(written) == 1, f"{len(written)} file.written events")
        report.check("server healthy after", healthy and 200 <= upload_after < 300)
