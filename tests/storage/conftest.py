"""Storage test fixtures: a fresh, migrated scratch database per test on each backend.

Servers come from scripts/services.sh (HW_PG_DSN, HW_TSDB_DSN). An unreachable server
fails the test instead of skipping it: under CI a skip is a failure anyway, and a silent
skip locally would hide that half the matrix never ran.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from storage.db import Backend, Conn
from storage.migrate import upgrade

SERVERS = {
    Backend.POSTGRES: os.environ.get("HW_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    Backend.TIMESCALEDB: os.environ.get("HW_TSDB_DSN", "postgresql://postgres@127.0.0.1:5433/postgres"),
}


def _admin(backend: Backend) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(SERVERS[backend], autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"{backend} server unreachable at {SERVERS[backend]} (run scripts/services.sh): {exc}")


def create_scratch_db(backend: Backend) -> str:
    name = f"hw_test_{uuid.uuid4().hex[:12]}"
    with _admin(backend) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    return make_conninfo(SERVERS[backend], dbname=name)


def drop_scratch_db(backend: Backend, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with _admin(backend) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


async def migrate(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await upgrade(conn)


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
