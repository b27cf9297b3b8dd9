"""Scratch databases on the test servers (scripts/services.sh), for storage and end-to-end tests.

An unreachable server fails the test instead of skipping it: under CI a skip is a failure
anyway, and a silent skip locally would hide that half the matrix never ran.
"""

from __future__ import annotations

import os
import uuid

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
