"""Splitting the agent's byte stream into frames: 9-byte ``>IIB`` headers (payload length, request id, type).

A frame arrives in pieces (a websocket message is ~32 KB, a read frame 256 KB). The pieces are
kept as they came and each payload is joined once when complete: a bytearray that is appended
to and trimmed at the front instead reallocates and copies its whole pending content whenever
it grows, which cost about a fifth of the API's CPU on a 100 MB read.

A header is checked before its payload is waited for: one announcing more than the reader's
cap, or a type the reader does not accept, is a ``FrameError`` at once, so a forged or broken
stream never makes the API buffer more than one capped frame.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Mapping
from typing import NamedTuple

HEADER = struct.Struct(">IIB")


class FrameError(ValueError):
    """The byte stream broke the protocol: its channel is dropped (never shown to a client)."""


class Frame(NamedTuple):
    rid: int
    kind: int
    payload: bytes


class FrameReader:
    def __init__(self, limits: Mapping[int, int] | None = None) -> None:
        """``limits``: the largest payload accepted per frame type; any other type is refused.
        None accepts any type and size (the agent's own reader, which trusts its client)."""
        self._limits = limits
        self._pieces: collections.deque[memoryview] = collections.deque()
        self._buffered = 0
        self._header: tuple[int, int, int] | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """The frames ``data`` completes, in order. ``data`` is kept until consumed."""
        view = memoryview(data)
        if not view.readonly:  # a caller may reuse its buffer: keep a copy, not a view of it
            view = memoryview(bytes(view))
        if view.nbytes:
            self._pieces.append(view.cast("B"))
            self._buffered += view.nbytes
        frames: list[Frame] = []
        while True:
            if self._header is None:
                if self._buffered < HEADER.size:
                    return frames
                self._header = HEADER.unpack(self._take(HEADER.size))
                self._check(*self._header)
            size, rid, kind = self._header
            if self._buffered < size:
                return frames
            self._header = None
            frames.append(Frame(rid, kind, self._take(size)))

    def _check(self, size: int, rid: int, kind: int) -> None:
        if self._limits is None:
            return
        limit = self._limits.get(kind)
        if limit is None:
            raise FrameError(f"frame type {kind} (id {rid}) is not one the agent sends")
        if size > limit:
            raise FrameError(f"frame type {kind} (id {rid}) announces {size} bytes, over {limit}")

    def _take(self, n: int) -> bytes:
        if n == 0:
            return b""
        self._buffered -= n
        parts = []
        while n:
            first = self._pieces[0]
            if len(first) <= n:
                parts.append(self._pieces.popleft())
                n -= len(first)
            else:
                parts.append(first[:n])
                self._pieces[0] = first[n:]
                n = 0
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)
