"""HTTP byte ranges and validators for GET /files (pure; RFC 9110 single-range subset)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from trove_core.errors import RangeNotSatisfiableError

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
