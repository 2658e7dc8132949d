"""Webhook receiver outage across a kill -9: every event still arrives, signed, at least once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from trove_sdk import TroveAdminClient, verify_webhook
from trove_sdk.webhooks import WebhookSignatureError

from tests.chaos.report import CaseReport
from tests.chaos.server import Server, free_port, running

NAMESPACE = "hooks"
FAST_RETRIES = {
    "TROVE_WEBHOOK_ALLOW_PRIVATE": "true",
    "TROVE_WEBHOOK_TIMEOUT_S": "2",
    "TROVE_WEBHOOK_BACKOFF_BASE_S": "0.5",
    "TROVE_WEBHOOK_BACKOFF_MAX_S": "2",
    "TROVE_WEBHOOK_MAX_ATTEMPTS": "50",
    "TROVE_WEBHOOK_POLL_INTERVAL_S": "0.5",
}
DELIVERY_WAIT_S = 90.0  # a killed dispatcher's leases run out after webhook_timeout_s + 30 s


@dataclass
class Receiver:
    """Records every POST it answers; ``up``/``down`` keep the same port, as a restarted receiver would.

    ``up(hang=True)`` accepts deliveries and never answers them, so they are in flight
    (claimed by the dispatcher) when the server is killed.
    """

    port: int = field(default_factory=free_port)
    received: list[tuple[str, bytes]] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)
    held: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self, *, hang: bool = False) -> None:
        receiver = self
        self._release.clear()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if hang:
                    with receiver._lock:
                        receiver.held += 1
                    receiver._release.wait(60)
                    return  # closes without an answer: not delivered
                with receiver._lock:
                    receiver.received.append((self.headers.get("x-trove-signature", ""), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def down(self) -> None:
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.received)


def _write_files(server: Server, prefix: str, count: int) -> int:
    acked = 0
    with server.http(NAMESPACE) as http:
        for n in range(count):
            answer = http.post("/write", json={"path": f"{prefix}-{n}.txt", "content": f"{prefix} {n}"})
            acked += answer.is_success
    return acked


def _verified_ids(received: list[tuple[str, bytes]], secret: str) -> tuple[Counter[str], int]:
    ids: Counter[str] = Counter()
    bad = 0
    for header, body in received:
        try:
            ids[verify_webhook(secret=secret, body=body, signature_header=header).id] += 1
        except (WebhookSignatureError, KeyError, ValueError):
            bad += 1
    return ids, bad


def receiver_outage(report: CaseReport) -> None:
    receiver = Receiver()
    receiver.up()
    try:
        with running("webhooks", env=FAST_RETRIES) as server:
            assert server.keys is not None
            with TroveAdminClient(
                api_key=server.keys.admin, workspace_id=server.keys.workspace_id, base_url=server.base_url
            ) as admin:
                hook = admin.create_webhook(receiver.url, events=["file.written"], namespace=NAMESPACE)
            acked = _write_files(server, "before", 5)
            deadline = time.monotonic() + 30
            while len(receiver.snapshot()) < 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            receiver.down()
            acked += _write_files(server, "outage", 10)
            time.sleep(2)  # a few failed attempts while the receiver is down
            receiver.up(hang=True)
            acked += _write_files(server, "hung", 5)
            deadline = time.monotonic() + 10
            while receiver.held < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            held = receiver.held
            server.kill()
            receiver.down()
            server.start()
            acked += _write_files(server, "after-restart", 10)
            expected = {e["id"] for e in server.events(NAMESPACE) if e["type"] == "file.written"}
            receiver.up()
            back = time.monotonic()
            deadline = back + DELIVERY_WAIT_S
            ids, bad = _verified_ids(receiver.snapshot(), hook.signing_secret)
            while not expected <= set(ids) and time.monotonic() < deadline:
                time.sleep(0.5)
                ids, bad = _verified_ids(receiver.snapshot(), hook.signing_secret)
            waited = time.monotonic() - back
        missing = expected - set(ids)
        duplicates = sum(n - 1 for n in ids.values() if n > 1)
        report.fact(
            "30 writes: 5 delivered, 10 with the receiver down, 5 with it accepting and never answering "
            f"({held} deliveries in flight at the kill -9), restart, 10 more; "
            f"acknowledged {acked}, file.written events {len(expected)}"
        )
        report.fact(
            f"receiver back: {len(expected) - len(missing)}/{len(expected)} events delivered "
            f"within {waited:.0f} s (bound {DELIVERY_WAIT_S:.0f} s); duplicates {duplicates}; "
            f"deliveries with a bad signature {bad}"
        )
        report.check(
            "every acknowledged write has its event", acked == len(expected), f"{acked} vs {len(expected)}"
        )
        report.check("every event delivered at least once", not missing, f"{len(missing)} never arrived")
        report.check("every delivery carries a valid signature", bad == 0, f"{bad} failed verify_webhook")
    finally:
        receiver.down()
