"""A sliding-window counter per key (a client address), bounded in memory.

Per API process: with N replicas an address gets up to N times the limit, which the per-user
lockout in the database (api/users.py) does not share; the lockout is the real defence against
password guessing, this only keeps one client from spending every worker on Argon2.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

__all__ = ["SlidingWindow"]


class SlidingWindow:
    def __init__(self, limit: int, window_s: float, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys  # oldest keys are forgotten first (they may try again sooner)
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> bool:
        """Count one attempt of ``key``; False when it is over the limit in the window."""
        now = time.monotonic() if now is None else now
        hits = self._hits.pop(key, None) or deque()
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        self._hits[key] = hits
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def retry_after(self, key: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        hits = self._hits.get(key)
        if not hits:
            return 0
        return max(1, int(hits[0] + self.window_s - now + 0.999))
