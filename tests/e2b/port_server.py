"""A server the get_host tests write into the sandbox and start there (standard library only).

``GET /headers`` (or any path): the request's headers and path as JSON; ``GET /hang-up``
closes the connection without an answer. ``POST /sink``: the SHA-256 of the
body. A WebSocket upgrade on any path: every text and binary message echoed, pings answered,
the close echoed. Usage: ``python3 port_server.py <port>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.echo()
            return
        if self.path == "/hang-up":  # no answer at all
            self.close_connection = True
            return
        seen = {k.lower(): v for k, v in self.headers.items()}
        self.reply(json.dumps({**seen, "path": self.path}).encode(), "application/json")

    def do_POST(self) -> None:
        digest = hashlib.sha256()
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                digest.update(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()  # after the last chunk: no trailers
        else:
            self.read_into(digest, int(self.headers.get("Content-Length", "0")))
        self.reply(digest.hexdigest().encode(), "text/plain")

    def read_into(self, digest: Any, left: int) -> None:
        while left:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                return
            digest.update(chunk)
            left -= len(chunk)

    def reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def echo(self) -> None:
        key = self.headers["Sec-WebSocket-Key"] + GUID
        accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        offered = self.headers.get("Sec-WebSocket-Protocol")
        if offered:
            self.send_header("Sec-WebSocket-Protocol", offered.split(",")[0].strip())
        self.end_headers()
        self.wfile.flush()
        while True:
            first, second = self.rfile.read(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                size = struct.unpack(">H", self.rfile.read(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if second & 0x80 else b"\0\0\0\0"
            masked = self.rfile.read(size)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(masked))
            if opcode == 8:
                self.frame(8, data[:2])
                self.close_connection = True
                return
            self.frame(10 if opcode == 9 else opcode, data)

    def frame(self, opcode: int, data: bytes) -> None:
        size = len(data)
        if size < 126:
            head = bytes([0x80 | opcode, size])
        elif size < 65536:
            head = bytes([0x80 | opcode, 126]) + struct.pack(">H", size)
        else:
            head = bytes([0x80 | opcode, 127]) + struct.pack(">Q", size)
        self.wfile.write(head + data)
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
