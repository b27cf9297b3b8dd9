"""Migrations: applied once in order, re-runnable, backend detected, newer schemas refused."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from core.errors import SchemaError, StorageError
from storage.db import Backend
from storage.migrate import latest_version, load_migrations, require_current_schema, schema_state, upgrade
from storage.writer import BatchWriter
from tests.storage.helpers import DB_IDS


async def connect(dsn: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


def test_both_backends_have_the_same_versions() -> None:
    pg, ts = load_migrations(Backend.POSTGRES), load_migrations(Backend.TIMESCALEDB)
    assert [(m.version, m.name) for m in pg] == [(m.version, m.name) for m in ts]
    assert [m.version for m in pg] == list(range(1, latest_version() + 1))


async def test_upgrade_applies_all_then_nothing(empty_db: str, backend_kind: Backend) -> None:
    async with await connect(empty_db) as conn:
        assert (await schema_state(conn)).version == 0
        applied = await upgrade(conn)
        assert [m.version for m in applied] == list(range(1, latest_version() + 1))
        assert await upgrade(conn) == []
        assert await require_current_schema(conn) is backend_kind
        cur = await conn.execute("SELECT count(*) FROM schema_version")
        assert await cur.fetchone() == (latest_version(),)
        if backend_kind is Backend.TIMESCALEDB:
            cur = await conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables ORDER BY 1"
            )
            assert await cur.fetchall() == [("reading",), ("reading_1m",)]
        else:
            cur = await conn.execute("SELECT relkind FROM pg_class WHERE relname = 'reading'")
            assert await cur.fetchone() == ("p",)  # partitioned table


async def test_concurrent_upgrades_apply_each_migration_once(empty_db: str) -> None:
    async with await connect(empty_db) as a, await connect(empty_db) as b:
        results = await asyncio.gather(upgrade(a), upgrade(b))
    assert sorted(len(r) for r in results) == [0, latest_version()]


async def test_database_newer_than_code_is_refused(backend: str) -> None:
    async with await connect(backend) as conn:
        await conn.execute(
            "INSERT INTO schema_version (version, name, backend, checksum) "
            "SELECT max(version) + 1, 'from_the_future', min(backend), '' FROM schema_version"
        )
        with pytest.raises(SchemaError, match="newer than"):
            await upgrade(conn)
        with pytest.raises(SchemaError, match="newer than"):
            await require_current_schema(conn)
    with pytest.raises(SchemaError, match="newer than"):
        await BatchWriter.connect(backend, DB_IDS)


async def test_writer_refuses_an_unmigrated_database(empty_db: str) -> None:
    with pytest.raises(SchemaError, match="hazardwatch db upgrade"):
        await BatchWriter.connect(empty_db, DB_IDS)


async def test_upgrade_works_in_transaction_mode_and_restores_it(empty_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(empty_db) as conn:
        assert len(await upgrade(conn)) == latest_version()
        assert not conn.autocommit
        await require_current_schema(conn)
        await conn.execute("SELECT 1")  # now inside a transaction: maintenance must refuse
        with pytest.raises(StorageError, match="inside a transaction"):
            await upgrade(conn)
