"""CollectorRunner scheduling, backoff and failure reporting; Hub queues; source metrics."""

from __future__ import annotations

import asyncio
import logging
import random

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from collector.base import CollectorRunner, SourceHealth
from collector.hub import Hub, MemorySink
from collector.metrics import HubMetrics, SourceMetrics
from core.batch import ReadingBatch
from core.clock import FakeClock
from core.errors import SourceError
from core.quality import Quality


class ScriptedSource:
    """A Source whose open/read outcomes follow a script (our own protocol's test double)."""

    streaming = False

    def __init__(self, script: list[str], interval_s: float = 1.0) -> None:
        self.name = "scripted"
        self.tags = np.array([0, 1], dtype=np.int32)
        self.interval_s = interval_s
        self.script = script
        self.opens = 0
        self.closes = 0
        self.read_times: list[float] = []
        self.clock: FakeClock | None = None

    async def open(self) -> None:
        self.opens += 1
        if self.script and self.script[0] == "open-fail":
            self.script.pop(0)
            raise SourceError("device refused")

    async def read(self) -> ReadingBatch:
        assert self.clock is not None
        self.read_times.append(self.clock.monotonic())
        step = self.script.pop(0) if self.script else "stop"
        if step == "fail":
            raise SourceError("link down")
        if step == "bug":
            raise ValueError("unexpected payload")
        if step == "library-cancel":  # what asyncua does when it awaits its own cancelled task
            raise asyncio.CancelledError
        if step == "empty":
            return ReadingBatch.empty()
        if step == "hang":
            await asyncio.sleep(10)
        if step == "slow":
            self.clock.advance(2.5)
        if step == "stop":  # the script is over: stop the runner as the process does, by cancelling it
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)
        return ReadingBatch.from_rows(
            [(0, self.clock.now_us(), 1.0, 192), (1, self.clock.now_us(), 2.0, 192)]
        )

    async def close(self) -> None:
        self.closes += 1


async def run_script(
    script: list[str], **kw: object
) -> tuple[ScriptedSource, CollectorRunner, list[ReadingBatch]]:
    clock = FakeClock(start_us=0)
    source = ScriptedSource(script)
    source.clock = clock
    out: list[ReadingBatch] = []
    runner = CollectorRunner(source, out.append, clock=clock, rng=random.Random(1), **kw)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await runner.run()
    return source, runner, out


async def test_polls_on_cadence_and_skips_ticks_missed_by_a_slow_read() -> None:
    source, runner, out = await run_script(["ok", "ok", "slow", "ok", "ok"])
    assert source.read_times == [0.0, 1.0, 2.0, 4.5, 5.5, 6.5]  # the last read ends the script
    assert runner.stats.reads == 5 and runner.stats.readings == 10 and len(out) == 5


async def test_failure_publishes_one_comm_failure_batch_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="collector.base")
    source, runner, out = await run_script(
        ["ok", "fail", "open-fail", "open-fail", "ok"], backoff_initial_s=1.0
    )
    bad = [b for b in out if (b.quality == Quality.BAD_COMM_FAILURE).all()]
    assert len(bad) == 1 and np.isnan(bad[0].value).all() and bad[0].tag.tolist() == [0, 1]
    assert runner.stats.errors == 3 and runner.stats.reconnects == 3
    assert source.opens == 4 and source.closes == source.opens
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failed" in m for m in messages) == 1
    assert sum("recovered" in m for m in messages) == 1
    assert runner.stats.history == ["ok", "failed", "ok"]


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(0, 0.75, 1.25), (1, 1.5, 2.5), (3, 6.0, 10.0), (10, 45.0, 75.0), (50, 45.0, 75.0)],
)
def test_backoff_is_exponential_capped_and_jittered(attempt: int, low: float, high: float) -> None:
    runner = CollectorRunner(
        ScriptedSource([]), lambda b: None, backoff_initial_s=1, backoff_max_s=60, jitter=0.25
    )
    delays = [runner.backoff(attempt) for _ in range(200)]
    assert low <= min(delays) and max(delays) <= high
    assert len({round(d, 6) for d in delays}) > 1  # jitter: collectors do not reconnect in step


async def test_backoff_grows_while_connects_succeed_but_reads_fail() -> None:
    clock = FakeClock(start_us=0)
    source = ScriptedSource(["fail", "fail", "fail", "ok"])
    source.clock = clock
    runner = CollectorRunner(source, lambda b: None, clock=clock, jitter=0.0, backoff_initial_s=1.0)
    with pytest.raises(asyncio.CancelledError):
        await runner.run()
    assert source.read_times == [0.0, 1.0, 3.0, 7.0, 8.0]  # waits 1, 2, 4 s; then the normal cadence


async def test_an_unexpected_error_marks_tags_bad_and_collection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _source, runner, out = await run_script(["ok", "bug", "ok"])
    assert "ValueError: unexpected payload" in runner.stats.last_error
    assert [b for b in out if (b.quality == Quality.BAD_COMM_FAILURE).all()]
    assert runner.stats.history == ["ok", "failed", "ok"]
    assert "unexpected error" in caplog.text


async def test_a_cancelled_error_nobody_asked_for_is_a_failure_not_a_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The 10,000-tag run lost 4 OPC UA collectors for good this way: no log, no reconnect.
    source, runner, out = await run_script(["ok", "library-cancel", "ok"])
    assert runner.stats.history == ["ok", "failed", "ok"]
    assert "CancelledError" in runner.stats.last_error and runner.stats.reconnects == 1
    assert source.opens == 2
    assert [b for b in out if (b.quality == Quality.BAD_COMM_FAILURE).all()]


async def test_a_read_loop_that_crashes_is_logged_with_its_traceback_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(start_us=0)
    source = ScriptedSource(["ok", "fail", "ok"])
    source.clock = clock
    seen: list[ReadingBatch] = []

    def publish(batch: ReadingBatch) -> None:  # a sink that breaks on the first failure marker
        seen.append(batch)
        if len(seen) == 2:
            raise RuntimeError("sink bug")

    runner = CollectorRunner(source, publish, clock=clock, rng=random.Random(1))
    with pytest.raises(asyncio.CancelledError):
        await runner.run()
    assert runner.stats.restarts == 1
    assert runner.stats.history == ["ok", "failed", "ok"]
    crash = [r for r in caplog.records if "read loop crashed" in r.getMessage()]
    assert crash and crash[0].exc_info is not None and "sink bug" in caplog.text


async def test_outage_counts_from_the_last_good_read_to_the_first_data_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="collector.base")
    # reads: 0 s ok, 1 s fails (detected), 2 s connected but no data yet, 3 s data again
    _source, runner, _out = await run_script(["ok", "fail", "empty", "ok"], jitter=0.0, backoff_initial_s=1.0)
    assert runner.stats.last_outage_s == pytest.approx(3.0)
    assert runner.stats.history == ["ok", "failed", "ok"]
    recovered = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    assert (
        len(recovered) == 1 and "no data for 3.0 s" in recovered[0] and "detected 1.0 s after" in recovered[0]
    )


async def test_watchdog_rebuilds_a_source_whose_read_hangs() -> None:
    source, runner, _out = await run_script(["ok", "hang", "ok"], read_timeout_s=0.05)
    assert "watchdog" in runner.stats.last_error
    assert source.opens == 2


async def test_hub_drops_oldest_per_sink_and_a_slow_sink_never_delays_another() -> None:
    clock = FakeClock(start_us=0)
    hub = Hub(clock)
    fast = MemorySink()
    gate = asyncio.Event()
    slow_seen: list[ReadingBatch] = []

    async def slow(batch: ReadingBatch) -> None:
        await gate.wait()
        slow_seen.append(batch)

    hub.add_sink("fast", fast.write, max_batches=100)
    hub.add_sink("slow", slow, max_batches=3)
    await hub.start()
    batches = [ReadingBatch.from_rows([(i, i, float(i), 192), (i, i + 1, 0.0, 192)]) for i in range(10)]
    for b in batches:
        hub.publish(b)
        await asyncio.sleep(0)
    clock.advance(5)
    assert len(fast.batches) == 10
    stats = hub.stats()
    assert (
        stats["slow"].dropped_batches == 6 and stats["slow"].dropped_rows == 12
    )  # 1 in flight + 3 queued kept
    assert stats["slow"].depth == 3 and stats["slow"].lag_s == 5.0
    assert stats["fast"].dropped_batches == 0 and stats["fast"].depth == 0
    gate.set()
    assert await hub.drain(timeout_s=2)
    assert [b.tag[0] for b in slow_seen] == [0, 7, 8, 9]  # the oldest queued went first
    await hub.stop()


async def test_hub_counts_a_failing_sink_and_keeps_going() -> None:
    hub = Hub()
    calls: list[int] = []

    async def flaky(batch: ReadingBatch) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")

    hub.add_sink("flaky", flaky)
    await hub.start()
    for _ in range(3):
        hub.publish(ReadingBatch.from_rows([(0, 1, 1.0, 192)]))
    assert await hub.drain(2)
    assert hub.stats()["flaky"].errors == 1 and hub.stats()["flaky"].written_batches == 2
    await hub.stop()
    with pytest.raises(ValueError, match="already added"):
        hub.add_sink("flaky", flaky)


class InstantSource:
    """Reads complete at once, so a cancel often lands just as a read finishes."""

    streaming = True
    name = "instant"
    interval_s = 0.001

    def __init__(self) -> None:
        self.tags = np.array([0], dtype=np.int32)

    async def open(self) -> None:
        await asyncio.sleep(0)

    async def read(self) -> ReadingBatch:
        await asyncio.sleep(0)
        return ReadingBatch.from_rows([(0, 1, 1.0, 192)])

    async def close(self) -> None:
        await asyncio.sleep(0)


@pytest.mark.parametrize("steps", range(0, 40, 3))
async def test_a_runner_always_stops_when_cancelled(steps: int) -> None:
    # Python 3.11's wait_for can swallow a cancel that races a completing read (gh-86296);
    # a runner that ignored cancel() would hang shutdown.
    task = asyncio.create_task(CollectorRunner(InstantSource(), lambda b: None).run())
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    stopped = task in done and task.cancelled()
    while not task.done():  # keep a regression from hanging the rest of the suite
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    assert stopped, "the runner ignored cancel()"


async def test_the_restart_backoff_starts_again_after_a_good_read() -> None:
    clock = FakeClock(start_us=0)
    source = ScriptedSource(["ok", "fail", "ok", "fail", "ok", "fail", "ok"])
    source.clock = clock

    def publish(batch: ReadingBatch) -> None:  # a sink that breaks on every failure marker
        if np.isnan(batch.value).all():
            raise RuntimeError("sink bug")

    runner = CollectorRunner(source, publish, clock=clock, rng=random.Random(1))
    attempts: list[int] = []
    backoff = runner.backoff

    def spy(attempt: int) -> float:
        attempts.append(attempt)
        return backoff(attempt)

    runner.backoff = spy  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await runner.run()
    assert runner.stats.restarts == 3
    assert attempts == [0, 0, 0]  # every restart followed a good read: never the growing backoff


class SwallowingCloseSource(ScriptedSource):
    """close() turns the runner's cancel into an OSError, as a client library's disconnect may."""

    async def close(self) -> None:
        self.closes += 1
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the process stops while the source closes
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise OSError("transport closed") from None


async def test_a_stop_swallowed_while_closing_ends_the_runner_without_a_backoff_or_reopen() -> None:
    clock = FakeClock(start_us=0)
    source = SwallowingCloseSource(["ok", "fail", "ok"])
    source.clock = clock
    runner = CollectorRunner(source, lambda b: None, clock=clock, rng=random.Random(1))
    with pytest.raises(asyncio.CancelledError):
        await runner.run()
    assert source.opens == 1 and runner.stats.reconnects == 0
    assert clock.monotonic() == 1.0  # one poll interval; no reconnect backoff was slept


async def test_metrics_take_each_sources_health_once_per_scrape() -> None:
    class Counted(ScriptedSource):
        calls = 0

        def health(self) -> SourceHealth:
            self.calls += 1
            return SourceHealth({"plc": True})

    source = Counted([])
    runner = CollectorRunner(source, lambda b: None)
    runner.stats.state = "ok"
    registry = CollectorRegistry()
    registry.register(SourceMetrics([runner]))
    text = generate_latest(registry).decode()
    assert source.calls == 1  # registering did not collect; the scrape took health() once
    got = {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert got[("hazardwatch_source_up", frozenset({("source", "scripted")}))] == 1
    assert got[("hazardwatch_device_up", frozenset({("device", "plc"), ("source", "scripted")}))] == 1
    assert got[("hazardwatch_source_readings_total", frozenset({("source", "scripted")}))] == 0


async def test_hub_metrics_per_sink() -> None:
    clock = FakeClock(start_us=0)
    hub = Hub(clock)
    hub.add_sink("historian", MemorySink().write, max_batches=1)
    registry = CollectorRegistry()
    registry.register(HubMetrics(hub))
    hub.publish(ReadingBatch.from_rows([(0, 1, 1.0, 0xC0), (1, 1, 2.0, 0xC0)]))
    hub.publish(ReadingBatch.from_rows([(0, 2, 1.0, 0xC0)]))  # the queue holds one: the first is dropped
    clock.advance(2.5)
    sink = {"sink": "historian"}
    assert registry.get_sample_value("hazardwatch_hub_queue_depth", sink) == 1
    assert registry.get_sample_value("hazardwatch_hub_lag_seconds", sink) == 2.5
    assert registry.get_sample_value("hazardwatch_hub_dropped_batches_total", sink) == 1
    assert registry.get_sample_value("hazardwatch_hub_dropped_rows_total", sink) == 2
