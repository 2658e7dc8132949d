"""HTTP byte ranges and validators for GET /files (pure; RFC 9110 single-range subset): which
bytes a download serves, with what status and headers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formatdate

from trove_core.errors import RangeNotSatisfiableError
from trove_core.wire import HEADER_SIZE, HEADER_TRUNCATED

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive


def etag(size: int, mtime_ns: int) -> str:
    return f'"{size:x}-{mtime_ns:x}"'


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range asked for, or None for the whole file (absent, multi-range or malformed)."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiableError(f"Range {header!r} is empty")
        return ByteRange(max(0, size - length), size)
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiableError(f"Range {header!r} is outside the file ({size} bytes)")
    return ByteRange(start, end)


@dataclass(frozen=True)
class Download:
    """What a GET or HEAD of a file answers: bytes ``start``..``end`` (exclusive) of the file."""

    start: int
    end: int
    status: int
    headers: dict[str, str] = field(default_factory=dict)


def plan_download(
    *, size: int, mtime_ns: int, max_bytes: int, range_header: str | None, if_range: str | None
) -> Download:
    """The status, byte span and headers for a file of ``size`` bytes, served up to ``max_bytes``.

    A single ``Range`` gives 206 with ``Content-Range``; an ``If-Range`` that does not match the
    strong ``ETag`` asks for the whole file; an unsatisfiable range raises 416 carrying
    ``Content-Range: bytes */<served>``.
    """
    tag = etag(size, mtime_ns)
    served = min(size, max_bytes)
    headers = {
        HEADER_SIZE: str(size),
        HEADER_TRUNCATED: "1" if served < size else "0",
        "ETag": tag,
        "Accept-Ranges": "bytes",
        "Last-Modified": http_date(mtime_ns),
    }
    start, end, status = 0, served, 200
    if if_range is None or if_range == tag:
        try:
            wanted = parse_range(range_header, served)
        except RangeNotSatisfiableError as exc:
            exc.headers["Content-Range"] = f"bytes */{served}"
            raise
        if wanted is not None:
            start, end, status = wanted.start, wanted.end, 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{served}"
    headers["Content-Length"] = str(end - start)
    return Download(start=start, end=end, status=status, headers=headers)


def http_date(mtime_ns: int) -> str:
    return formatdate(mtime_ns / 1e9, usegmt=True)
