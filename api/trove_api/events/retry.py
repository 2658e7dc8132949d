"""When to try a webhook delivery again: exponential backoff with jitter, ``Retry-After``."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime
from time import time


def is_retryable(status_code: int | None) -> bool:
    """Network errors (no status), 408, 429 and 5xx are worth another try; other answers are final."""
    return status_code is None or status_code in (408, 429) or status_code >= 500


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay after failed attempt number ``attempt`` (1-based): ``base * 2**(attempt-1)``, capped,
    with "equal jitter" (between half and all of it) so a burst of failures does not retry in step.
    """
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    jitter: float = (rng or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (time() if now is None else now))


def next_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """The receiver's ``Retry-After`` when it gave one (within the cap), else the backoff."""
    if retry_after is not None:
        return min(cap, retry_after)
    return backoff_delay(attempt, base=base, cap=cap, rng=rng)
