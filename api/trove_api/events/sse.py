"""Server-Sent Events framing: LF line endings only, one-line JSON per ``data:`` line.

The official ``trove webhooks listen`` splits the stream on ``\\n\\n`` and reads each
``data: `` line as one complete JSON event, so CRLF framing or multi-line data would never
be forwarded (WIRE.md 3.6). ``ensure_ascii`` keeps U+2028 and friends, which
``str.splitlines`` also splits on, out of the line.
"""

from __future__ import annotations

import json
from typing import Any

KEEPALIVE = b": ping\n\n"
# The last bytes of a stream whose key was revoked (a comment: clients skip it).
KEY_REVOKED_COMMENT = b": key revoked\n\n"


def encode_data(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=True)


def frame(event: dict[str, Any], *, event_id: str | None = None, retry_ms: int | None = None) -> bytes:
    """One SSE message: optional ``id:`` / ``retry:`` lines, then a single ``data:`` line."""
    lines = []
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    if event_id is not None:
        lines.append(f"id: {_one_line(event_id)}")
    lines.append(f"data: {encode_data(event)}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _one_line(value: str) -> str:
    return value.replace("\r", "").replace("\n", "")
