"""Waiting in tests: poll a condition until it holds or a deadline passes.

Tests synchronise on what they wait for (a quality, a counter, a row), never on a fixed
sleep: a fixed sleep is either too short on a loaded machine (flaky) or too long everywhere
(slow). The deadline is only a bound for failure, so it can be generous.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["eventually"]


async def eventually(cond: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> None:
    """Return once `cond()` is true; raise TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(interval)
