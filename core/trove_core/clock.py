"""Timestamps: one fixed-width ISO-8601 UTC format with microseconds and ``Z`` everywhere.

Fixed width matters: clients sort ``modified_at`` as strings and echo ``created_at`` back as
an exclusive ``since`` (WIRE.md 1.6, A11, A22).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_FORMAT)


def now_ts() -> str:
    return format_ts(datetime.now(UTC))


def from_ns(epoch_ns: int) -> str:
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    return format_ts(datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanos // 1000))


def parse_ts(text: str) -> datetime:
    """Parse ``…Z``, ``…+00:00`` and the ``+`` that arrives as a space in hand-built URLs."""
    value = text.strip()
    if len(value) > 19 and value[-6] == " " and value[-5:-3].isdigit():
        value = value[:-6] + "+" + value[-5:]
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def next_after(previous: str, candidate: str) -> str:
    """``candidate``, or ``previous`` + 1 µs when the clock did not move past it."""
    if candidate > previous:
        return candidate
    return format_ts(parse_ts(previous) + timedelta(microseconds=1))
