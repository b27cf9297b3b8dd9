"""Time as data: UTC int64 microseconds since the epoch, from an injected Clock.

Logic never reads the wall clock itself; production code gets a SystemClock, tests a
FakeClock that moves only when told to.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["US_PER_S", "Clock", "FakeClock", "SystemClock", "from_datetime", "to_datetime"]

US_PER_S = 1_000_000


class Clock(Protocol):
    def now_us(self) -> int:
        """Current UTC time in microseconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for timeouts and backoff)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only through ``advance``/``set``; ``sleep`` advances it instantly."""

    def __init__(self, start_us: int = 1_700_000_000 * US_PER_S) -> None:
        self._now_us = start_us
        self._mono = 0.0

    def now_us(self) -> int:
        return self._now_us

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> int:
        if seconds < 0:
            raise ValueError("FakeClock cannot go backwards")
        self._now_us += round(seconds * US_PER_S)
        self._mono += seconds
        return self._now_us

    def set(self, now_us: int) -> None:
        if now_us < self._now_us:
            raise ValueError("FakeClock cannot go backwards")
        self._mono += (now_us - self._now_us) / US_PER_S
        self._now_us = now_us

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


def to_datetime(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us // US_PER_S, tz=UTC).replace(microsecond=ts_us % US_PER_S)


def from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: HazardWatch times are UTC-aware")
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds
