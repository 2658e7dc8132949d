"""trove_core.clock: one fixed-width UTC format, lenient parsing, strictly increasing stamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trove_core.clock import format_ts, from_ns, next_after, now_ts, parse_ts

_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
)


def test_format_examples() -> None:
    assert format_ts(datetime(2026, 5, 7, 20, 0, tzinfo=UTC)) == "2026-05-07T20:00:00.000000Z"
    eastern = timezone(timedelta(hours=-5))
    assert format_ts(datetime(2026, 5, 7, 15, 0, 0, 5, tzinfo=eastern)) == "2026-05-07T20:00:00.000005Z"
    assert from_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456Z"
    assert _SHAPE.fullmatch(now_ts())


@given(_MOMENTS)
def test_format_is_fixed_width_and_round_trips(moment: datetime) -> None:
    text = format_ts(moment)
    assert _SHAPE.fullmatch(text)
    assert len(text) == 27
    assert parse_ts(text) == moment


@given(_MOMENTS, _MOMENTS)
def test_string_order_is_time_order(a: datetime, b: datetime) -> None:
    assert (format_ts(a) < format_ts(b)) == (a < b)


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-07T20:00:00.123456Z",
        "2026-05-07T20:00:00.123456+00:00",
        "2026-05-07T20:00:00.123456 00:00",  # '+' decoded as a space in a hand-built URL
        "2026-05-07T22:00:00.123456+02:00",
        "2026-05-07T22:00:00.123456 02:00",
        "2026-05-07T15:00:00.123456-05:00",
        "2026-05-07T20:00:00.123456",  # naive means UTC
        "  2026-05-07T20:00:00.123456Z  ",
    ],
)
def test_parse_forms(text: str) -> None:
    assert parse_ts(text) == datetime(2026, 5, 7, 20, 0, 0, 123456, tzinfo=UTC)


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_ts("yesterday")


def test_next_after_examples() -> None:
    earlier, later = "2026-05-07T20:00:00.000001Z", "2026-05-07T20:00:00.000002Z"
    assert next_after(earlier, later) == later
    assert next_after(later, later) == "2026-05-07T20:00:00.000003Z"
    assert next_after(later, earlier) == "2026-05-07T20:00:00.000003Z"
    assert next_after("2026-12-31T23:59:59.999999Z", "2026-01-01T00:00:00.000000Z") == (
        "2027-01-01T00:00:00.000000Z"
    )


@given(_MOMENTS, _MOMENTS)
def test_next_after_strictly_increases(previous: datetime, candidate: datetime) -> None:
    prev_text, cand_text = format_ts(previous), format_ts(candidate)
    result = next_after(prev_text, cand_text)
    assert result > prev_text
    assert _SHAPE.fullmatch(result)
    if cand_text > prev_text:
        assert result == cand_text
    else:
        assert parse_ts(result) == previous + timedelta(microseconds=1)


@given(st.lists(_MOMENTS, min_size=2, max_size=30))
def test_a_sequence_of_stamps_is_strictly_increasing(moments: list[datetime]) -> None:
    last = format_ts(moments[0])
    for moment in moments[1:]:
        nxt = next_after(last, format_ts(moment))
        assert nxt > last
        last = nxt
