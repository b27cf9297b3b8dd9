"""Embedded PostgreSQL: starts from nothing, migrates, keeps data across a stop and restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg

from core.settings import Settings, StorageSettings
from storage.embedded import EmbeddedPostgres, configured_dsn, dsn_or_embedded
from storage.migrate import require_current_schema, upgrade


async def migrate_and_check(dsn: str) -> str:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await upgrade(conn)
        return (await require_current_schema(conn)).value


def test_embedded_server_is_reused_after_restart(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    with EmbeddedPostgres(data) as dsn:
        assert asyncio.run(migrate_and_check(dsn)) == "postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO tag_latest VALUES (1, now(), 42.0, 192)")
    assert not (data / "postmaster.pid").exists()  # really stopped
    with EmbeddedPostgres(data) as dsn, psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT value FROM tag_latest").fetchall() == [(42.0,)]


def test_configured_database_wins_over_embedded(tmp_path: Path) -> None:
    settings = StorageSettings(embedded_dir=str(tmp_path / "pg"))
    assert configured_dsn(settings, {}) is None
    assert configured_dsn(settings, {"DATABASE_URL": "postgresql://x/y"}) == "postgresql://x/y"
    assert configured_dsn(settings.model_copy(update={"dsn": "postgresql://a/b"}), {"DATABASE_URL": "z"}) == (
        "postgresql://a/b"
    )
    assert dsn_or_embedded(Settings(storage=settings), {"DATABASE_URL": "postgresql://x/y"}) == (
        "postgresql://x/y",
        None,
    )


def test_local_paths_resolve_against_the_data_dir(tmp_path: Path) -> None:
    default = Settings()
    assert (default.spool_path, default.embedded_path) == (Path("var/spool"), Path("var/pg"))
    moved = Settings(data_dir=str(tmp_path / "hw"), storage=StorageSettings(spool_dir="buffer"))
    assert moved.spool_path == tmp_path / "hw" / "buffer"
    assert moved.embedded_path == tmp_path / "hw" / "pg"
    absolute = Settings(data_dir="elsewhere", storage=StorageSettings(spool_dir=str(tmp_path / "s")))
    assert absolute.spool_path == tmp_path / "s"
