"""Storage test fixtures: a fresh, migrated scratch database per test on each backend.

Servers come from scripts/services.sh (HW_PG_DSN, HW_TSDB_DSN); see tests/support/databases.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from storage.db import Backend, Conn
from tests.support.databases import create_scratch_db, drop_scratch_db, migrate


@pytest.fixture(params=[Backend.POSTGRES, Backend.TIMESCALEDB], ids=["postgres", "timescaledb"])
def backend_kind(request: pytest.FixtureRequest) -> Backend:
    kind: Backend = request.param
    return kind


@pytest.fixture
def empty_db(backend_kind: Backend) -> Iterator[str]:
    """DSN of a fresh database with no schema, on the parametrized backend."""
    dsn = create_scratch_db(backend_kind)
    try:
        yield dsn
    finally:
        drop_scratch_db(backend_kind, dsn)


@pytest.fixture
def backend(empty_db: str) -> str:
    """DSN of a fresh, fully migrated database on the parametrized backend."""
    asyncio.run(migrate(empty_db))
    return empty_db


@pytest.fixture
async def conn(backend: str) -> AsyncIterator[Conn]:
    """An autocommit connection to the ``backend`` database, for assertions."""
    async with await psycopg.AsyncConnection.connect(backend, autocommit=True) as c:
        yield c
