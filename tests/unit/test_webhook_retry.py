"""Backoff with jitter, Retry-After and which answers are retried."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from trove_api.events.retry import backoff_delay, is_retryable, next_delay, parse_retry_after


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 10])
def test_backoff_doubles_within_jitter_and_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
    for _ in range(200):
        delay = backoff_delay(attempt, base=2.0, cap=60.0, rng=rng)
        assert ceiling / 2 <= delay <= ceiling


def test_backoff_is_jittered() -> None:
    rng = random.Random(7)
    assert len({backoff_delay(3, base=1.0, cap=100.0, rng=rng) for _ in range(20)}) > 1


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("7") == 7.0
    now = datetime(2030, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(90, abs=1)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_retry_after_wins_but_is_capped() -> None:
    assert next_delay(1, base=1.0, cap=100.0, retry_after=42.0) == 42.0
    assert next_delay(1, base=1.0, cap=10.0, retry_after=42.0) == 10.0


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (None, True),
        (500, True),
        (503, True),
        (429, True),
        (408, True),
        (400, False),
        (404, False),
        (301, False),
    ],
)
def test_which_answers_are_retried(status: int | None, retry: bool) -> None:
    assert is_retryable(status) is retry
