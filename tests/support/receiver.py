"""A real webhook receiver on 127.0.0.1 (stdlib HTTP server in a thread) that records requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENDLESS_CAP = 128 * 1024 * 1024


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next scripted status (then ``default``) and records it."""

    url: str
    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: int = 200
    # "short": a two-byte body. "endless": 64 KiB chunks until the client hangs up (or
    # ENDLESS_CAP is sent, so a client that reads everything cannot exhaust the test machine).
    # "trickle": one byte every 50 ms until the client hangs up (a slow-body receiver).
    body: str = "short"
    sent_bytes: int = 0  # of endless/trickle bodies, until the client went away
    hung_up: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> tuple[int, dict[str, str]]:
        with self._lock:
            return self.script.pop(0) if self.script else (self.default, {})

    def record(self, item: Received) -> None:
        with self._lock:
            self.requests.append(item)

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 30) -> list[Received]:
        """Poll (bounded) until ``predicate(requests)``; returns a snapshot or fails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.requests)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.05)
        raise AssertionError(f"receiver condition not met; got {len(self.requests)} requests")

    def of_type(self, type_: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.headers.get("x-trove-event") == type_]


@contextmanager
def run_receiver(default: int = 200) -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            receiver.record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status, headers = receiver.answer()
            if receiver.body != "short":
                self._stream_forever(status, headers)
                return
            payload = b"ok" if status < 300 else b"nope"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _stream_forever(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()  # no length: HTTP/1.0, the body ends when the connection does
            chunk, pause = (b"x" * 65536, 0.0) if receiver.body == "endless" else (b"y", 0.05)
            try:
                while receiver.sent_bytes < ENDLESS_CAP:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    receiver.sent_bytes += len(chunk)
                    time.sleep(pause)
            except OSError:  # the client hung up
                receiver.hung_up.set()

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    receiver = Receiver(url=f"http://127.0.0.1:{httpd.server_address[1]}/hook", default=default)
    thread = threading.Thread(target=httpd.serve_forever, name="receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        httpd.shutdown()
        httpd.server_close()


def wait_until(predicate: Callable[[], object], timeout: float = 30, what: str = "condition") -> object:
    """Poll ``predicate`` until truthy (bounded); returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
