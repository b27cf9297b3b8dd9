"""RuleSink: rule state survives a restart; Runtime: one process per spool, whatever its data directory."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from core.batch import ReadingBatch
from core.clock import FakeClock
from core.config import load_plant
from core.registry import TagRegistry
from core.settings import StorageSettings
from hazardwatch.runtime import RuleSink, RunSummary, Runtime, RuntimeOptions
from rules import RuleEngine
from storage.db import Backend
from storage.dirlock import DirectoryInUse, DirectoryLock
from storage.heartbeat import Heartbeat
from tests.support.databases import create_scratch_db, drop_scratch_db

PLANT = Path(__file__).resolve().parents[1] / "core" / "data" / "two_enterprises.yaml"


def sink(clock: FakeClock) -> tuple[RuleSink, TagRegistry]:
    plant = load_plant(PLANT)
    registry = TagRegistry.from_plant(plant)
    return RuleSink(RuleEngine.from_plant(plant, registry), clock), registry


async def test_an_on_delay_started_before_a_restart_completes_after_it(tmp_path: Path) -> None:
    clock = FakeClock()
    before, registry = sink(clock)
    lt1 = registry.index_of("AA.V1.LT1")  # LEVEL, h 8 with the default 60 s on-delay
    await before.write(ReadingBatch.from_rows([(lt1, clock.now_us(), 8.5, 0xC0)]))
    assert not before.engine.active()
    state = tmp_path / "rule-state.json"
    before.save(state)

    clock.advance(61)
    after, _ = sink(clock)
    assert after.load(state)
    after._log(after.engine.tick(clock.now_us()))  # no new data: the timer alone fires it
    active = {c.key for c in after.engine.active()}
    assert "AA.V1.LT1:H" in active
    assert after.activations_total >= 1


def test_unreadable_state_starts_fresh(tmp_path: Path) -> None:
    state = tmp_path / "rule-state.json"
    state.write_text("{not json", encoding="utf-8")
    fresh, _ = sink(FakeClock())
    assert not fresh.load(state)
    assert not fresh.load(tmp_path / "missing.json")
    assert np.isnan(fresh.engine.value).all()


async def test_two_runs_may_not_share_a_spool_even_from_different_data_directories(tmp_path: Path) -> None:
    shared = tmp_path / "shared-spool"
    plant = load_plant(PLANT)
    settings = plant.settings.model_copy(
        update={"data_dir": str(tmp_path / "b"), "storage": StorageSettings(spool_dir=str(shared))}
    )
    runtime = Runtime(
        plant.model_copy(update={"settings": settings}),
        "postgresql://postgres@127.0.0.1:1/unused",
        options=RuntimeOptions(metrics_port=None),
    )
    # Run A, with its own data directory, holds the spool; `run` prints the error and exits 1.
    with DirectoryLock(shared, "spool directory"), pytest.raises(DirectoryInUse) as refused:
        await runtime.start()
    assert f"spool directory {shared.resolve()} is in use" in str(refused.value)
    assert f"pid {os.getpid()}" in str(refused.value)
    with DirectoryLock(tmp_path / "b"):  # the failed start let go of its own data directory
        pass


def test_the_stop_summary_names_every_place_a_row_went() -> None:
    summary = RunSummary(
        readings=9347, comm_markers=87, gap_markers=87, to_historian=9511, written_rows=5687,
        drained_rows=3900, spooled_at_start=120, pending_rows=30, dropped_rows=10, rejected_rows=2,
        quarantined_rows=1,
    )  # fmt: skip
    assert summary.collected == 9521 and summary.lost_in_hub == 10 and summary.unaccounted == 1
    assert summary.text() == (
        "stopped: 9347 readings collected, 87 comm-failure markers, 87 crash-gap markers; "
        "5687 rows written directly, 3900 drained from the spool (120 left there by an earlier run), "
        "30 still spooled, 10 dropped; 2 rejected (timestamp outside 1970-2200); 1 quarantined; "
        "10 lost in the hub queue (dropped or not delivered at shutdown); 1 unaccounted for"
    )
    resent = RunSummary(
        readings=100, comm_markers=0, gap_markers=0, to_historian=100, written_rows=103, drained_rows=0,
        spooled_at_start=0, pending_rows=0, dropped_rows=0, rejected_rows=0, quarantined_rows=0,
    )  # fmt: skip
    assert resent.text() == (
        "stopped: 100 readings collected, 0 comm-failure markers, 0 crash-gap markers; "
        "103 rows written directly, 0 drained from the spool, 0 still spooled, 0 dropped; "
        "3 rows counted twice by the writer (re-sent)"
    )


async def test_a_stop_that_leaves_batches_behind_is_not_clean(tmp_path: Path) -> None:
    """Batches a sink could not take in time are lost at stop: the next start must mark the gap."""
    dsn = create_scratch_db(Backend.POSTGRES)
    try:
        plant = load_plant(PLANT)
        settings = plant.settings.model_copy(update={"data_dir": str(tmp_path)})
        runtime = Runtime(
            plant.model_copy(update={"settings": settings}),
            dsn,
            options=RuntimeOptions(metrics_port=None, shutdown_flush_s=0.3),
        )
        stuck = asyncio.Event()

        async def never_done(batch: ReadingBatch) -> None:
            await stuck.wait()

        runtime.add_sink("stuck", never_done)
        await runtime.start()
        for _ in range(3):
            runtime.hub.publish(ReadingBatch.from_rows([(0, 1_700_000_000_000_000, 1.0, 0xC0)]))
        await runtime.stop()
        beat = Heartbeat(tmp_path).previous()
        assert beat is not None and not beat.clean
        with DirectoryLock(tmp_path):  # released all the same
            pass
    finally:
        drop_scratch_db(Backend.POSTGRES, dsn)
