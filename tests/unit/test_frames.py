"""The agent-stream frame splitter: any cut of the byte stream gives back the same frames."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from trove_api.runtimes.channel.frames import HEADER, Frame, FrameReader

frames_strategy = st.lists(
    st.builds(
        Frame,
        rid=st.integers(0, 2**32 - 1),
        kind=st.integers(0, 255),
        payload=st.binary(max_size=300),
    ),
    max_size=8,
)


def encode(frames: list[Frame]) -> bytes:
    return b"".join(HEADER.pack(len(f.payload), f.rid, f.kind) + f.payload for f in frames)


@given(frames_strategy, st.lists(st.integers(0, 4000), max_size=12))
def test_any_split_gives_the_same_frames(frames: list[Frame], cuts: list[int]) -> None:
    stream = encode(frames)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    reader = FrameReader()
    got: list[Frame] = []
    for start, end in itertools.pairwise(bounds):
        got += reader.feed(memoryview(stream)[start:end])
    assert got == frames
    assert all(type(f.payload) is bytes for f in got)


def test_a_partial_frame_waits_for_the_rest() -> None:
    reader = FrameReader()
    stream = encode([Frame(7, 2, b"x" * 100)])
    assert reader.feed(stream[:5]) == []
    assert reader.feed(stream[5:50]) == []
    assert reader.feed(stream[50:]) == [Frame(7, 2, b"x" * 100)]


def test_a_reused_caller_buffer_does_not_change_pending_bytes() -> None:
    reader = FrameReader()
    stream = encode([Frame(1, 2, b"abcdef")])
    buffer = bytearray(stream[:12])
    assert reader.feed(buffer) == []
    buffer[:] = b"\xff" * 12  # the caller reuses its buffer before the frame is complete
    assert reader.feed(stream[12:]) == [Frame(1, 2, b"abcdef")]
