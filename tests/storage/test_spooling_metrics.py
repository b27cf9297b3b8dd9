"""SpoolingWriter's metrics in a registry: the historian gauges at scrape time, and the age of each
batch's newest reading at commit, by the way it came (memory or spool)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prometheus_client.registry import CollectorRegistry

from core.batch import ReadingBatch
from core.clock import FakeClock
from storage.spool import Spool
from storage.spooling import SpoolingWriter
from storage.writer import BatchWriter, to_db_ids
from tests.storage.helpers import DB_IDS, GOOD, N_TAGS, T0, S


def second(i: int) -> ReadingBatch:
    n = N_TAGS
    return ReadingBatch.from_arrays(
        np.arange(n), np.full(n, T0 + i * S), np.full(n, float(i)), np.full(n, GOOD)
    )


async def test_batch_age_at_commit_and_the_historian_gauges(backend: str, tmp_path: Path) -> None:
    async def connect() -> BatchWriter:
        return await BatchWriter.connect(backend, DB_IDS)

    spool = Spool(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    spool.append(to_db_ids(second(0), DB_IDS))  # left by an earlier run: drained at start
    clock = FakeClock(start_us=T0 + 10 * S)  # ages are exact: the clock only moves when told
    registry = CollectorRegistry()
    writer = SpoolingWriter(connect, DB_IDS, spool, clock=clock, metrics=registry)
    async with writer:
        await writer.wait_drained()
        for i in (7, 8):
            await writer.write(second(i))
        await writer.flush()

    def age(stat: str, via: str) -> float | None:
        return registry.get_sample_value(f"hazardwatch_historian_batch_age_seconds_{stat}", {"via": via})

    assert (age("count", "spool"), age("sum", "spool")) == (1, 10.0)  # second 0, committed at 10 s
    assert (age("count", "memory"), age("sum", "memory")) == (2, 3.0 + 2.0)
    assert (
        registry.get_sample_value(
            "hazardwatch_historian_batch_age_seconds_bucket", {"via": "memory", "le": "2.5"}
        )
        == 1
    )
    assert registry.get_sample_value("hazardwatch_historian_written_rows") == 2 * N_TAGS
    assert registry.get_sample_value("hazardwatch_historian_drained_rows") == N_TAGS
    assert registry.get_sample_value("hazardwatch_historian_pending_rows") == 0
    assert registry.get_sample_value("hazardwatch_historian_db_up") == 0  # closed


def test_without_a_registry_nothing_is_registered_anywhere(tmp_path: Path) -> None:
    """Two writers in one process (tests, several engines) must not clash in a global registry."""

    async def connect() -> BatchWriter:
        raise AssertionError("not started")

    for i in range(2):
        SpoolingWriter(connect, DB_IDS, Spool(tmp_path / str(i), max_bytes=1 << 20, segment_bytes=1 << 16))
