"""A small in-process sliding-window limiter keyed by client (device-login start and form)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from trove_core.errors import RateLimitedError

MAX_KEYS = 10_000


class RateLimiter:
    """At most ``limit`` hits per ``window_s`` per key; over it, ``RateLimitedError`` with Retry-After.

    Per process: behind several replicas the effective limit is that many times higher,
    which is fine for its purpose (slowing guessing and flooding from one client).
    """

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, *, what: str) -> None:
        self.check(key, what=what, record=True)

    def check(self, key: str, *, what: str, record: bool = False) -> None:
        """Refuse when ``key`` is over its limit; count this hit only when ``record``."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                wait = max(1, math.ceil(hits[0] + self.window_s - now))
                raise RateLimitedError(
                    f"Too many {what} from this client; try again in {wait}s", retry_after=wait
                )
            if record:
                hits.append(now)
            if len(self._hits) > MAX_KEYS:
                self._prune(now)

    def _prune(self, now: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window_s]:
            del self._hits[key]
