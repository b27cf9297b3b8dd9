"""Runtime: the registry sync retried after a start with the database down backs off with jitter."""

from __future__ import annotations

from pathlib import Path

from core.clock import FakeClock
from core.config import load_plant
from core.errors import DatabaseUnavailable
from hazardwatch.runtime import Runtime

PLANT = Path(__file__).resolve().parents[1] / "core" / "data" / "two_enterprises.yaml"
FAILURES = 9  # enough to reach the 60 s cap


class RecordingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


async def sync_retry_sleeps() -> list[float]:
    clock = RecordingClock()
    runtime = Runtime(load_plant(PLANT), "postgresql://unused", clock=clock)
    calls = 0

    async def sync() -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls <= FAILURES:
            raise DatabaseUnavailable("down")
        return {}

    runtime._sync = sync  # type: ignore[method-assign]
    await runtime._sync_later()
    assert calls == FAILURES + 1
    return clock.sleeps


async def test_sync_retries_double_to_a_minute_with_jitter_so_edges_do_not_reconnect_in_step() -> None:
    edges = [await sync_retry_sleeps() for _ in range(3)]
    for sleeps in edges:
        assert len(sleeps) == FAILURES + 1
        for attempt, slept in enumerate(sleeps):
            base = min(60.0, 2.0**attempt)
            assert 0.75 * base <= slept <= 1.25 * base, (attempt, slept)
    # Three edges started during the same outage retry at different moments.
    assert edges[0] != edges[1] != edges[2] != edges[0]
