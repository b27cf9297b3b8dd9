"""End-to-end fixtures: a fresh, empty TimescaleDB database per test (the runtime migrates it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.db import Backend
from tests.support.databases import create_scratch_db, drop_scratch_db


@pytest.fixture
def tsdb() -> Iterator[str]:
    dsn = create_scratch_db(Backend.TIMESCALEDB)
    try:
        yield dsn
    finally:
        drop_scratch_db(Backend.TIMESCALEDB, dsn)
