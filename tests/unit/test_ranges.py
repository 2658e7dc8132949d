"""trove_api.ranges: single byte ranges and ETags for GET /files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trove_api.ranges import ByteRange, etag, parse_range, plan_download
from trove_core.errors import RangeNotSatisfiableError


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("", 10, None),
        ("bytes=0-4", 10, ByteRange(0, 5)),
        ("bytes=5-", 10, ByteRange(5, 10)),
        ("bytes=-3", 10, ByteRange(7, 10)),
        ("bytes=-30", 10, ByteRange(0, 10)),
        ("bytes=2-100", 10, ByteRange(2, 10)),
        ("bytes=9-9", 10, ByteRange(9, 10)),
        (" bytes=0-0 ", 10, ByteRange(0, 1)),
        ("bytes=-", 10, None),
        ("bytes=0-1,3-4", 10, None),  # multi-range: whole file
        ("items=0-1", 10, None),
        ("bytes=a-b", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=5-2", 10), ("bytes=-0", 10), ("bytes=0-", 0)],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiableError) as info:
        parse_range(header, size)
    assert info.value.status == 416


@given(st.integers(0, 10_000), st.text(max_size=40))
def test_parse_range_never_crashes(size: int, header: str) -> None:
    try:
        result = parse_range(header, size)
    except RangeNotSatisfiableError:
        return
    if result is not None:
        assert 0 <= result.start < result.end <= size


@given(st.integers(1, 10_000), st.integers(0, 20_000), st.integers(0, 20_000))
def test_ranges_stay_inside_the_file(size: int, first: int, last: int) -> None:
    try:
        result = parse_range(f"bytes={first}-{last}", size)
    except RangeNotSatisfiableError:
        assert first >= size or last < first
        return
    assert result == ByteRange(first, min(last + 1, size))


def test_etag() -> None:
    assert etag(255, 4096) == '"ff-1000"'
    assert etag(1, 2) != etag(1, 3)
    assert etag(1, 2) != etag(2, 2)


def test_a_download_plan_serves_the_range_asked_for_within_the_cap() -> None:
    plan = plan_download(size=100, mtime_ns=7, max_bytes=50, range_header="bytes=10-", if_range=None)
    assert (plan.start, plan.end, plan.status) == (10, 50, 206)
    assert plan.headers["Content-Range"] == "bytes 10-49/50"
    assert plan.headers["Content-Length"] == "40"
    assert plan.headers["X-Trove-Truncated"] == "1"
    assert plan.headers["X-Trove-Size"] == "100"


def test_a_stale_if_range_gets_the_whole_file() -> None:
    plan = plan_download(size=10, mtime_ns=7, max_bytes=50, range_header="bytes=0-1", if_range='"old"')
    assert (plan.start, plan.end, plan.status) == (0, 10, 200)
    assert "Content-Range" not in plan.headers


def test_an_unsatisfiable_range_names_the_served_size() -> None:
    with pytest.raises(RangeNotSatisfiableError) as caught:
        plan_download(size=10, mtime_ns=7, max_bytes=50, range_header="bytes=20-", if_range=None)
    assert caught.value.headers["Content-Range"] == "bytes */10"
