"""Scratch databases on the test servers (scripts/services.sh), for storage and end-to-end tests.

An unreachable server fails the test instead of skipping it: under CI a skip is a failure
anyway, and a silent skip locally would hide that half the matrix never ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from storage.db import Backend
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


@contextlib.contextmanager
def migrated_db(backend: Backend) -> Iterator[str]:
    """A scratch database on ``backend`` with every migration applied, dropped afterwards; for
    sync and async fixtures alike (the migration runs on its own event loop in a thread)."""
    dsn = create_scratch_db(backend)
    try:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, migrate(dsn)).result()
        yield dsn
    finally:
        drop_scratch_db(backend, dsn)


async def fetch_all(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Every row of one query, on a connection of its own (autocommit)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await (await conn.execute(sql, params)).fetchall()
