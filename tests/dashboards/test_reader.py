"""Grafana's read-only role on a database whose owner may not alter roles: the migration says
so in the log, and `hazardwatch grafana grant` refuses to report success."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from core.errors import StorageError
from dashboards.reader import ROLE, grant
from storage.db import Backend
from tests.support.databases import SERVERS, migrate, migrated_db


@pytest.fixture
def owned_by_a_plain_user() -> Iterator[str]:
    """A fresh database owned by a login without CREATEROLE (a managed PostgreSQL's app user)."""
    user, db = f"hw_owner_{uuid.uuid4().hex[:8]}", f"hw_test_{uuid.uuid4().hex[:12]}"
    with migrated_db(Backend.POSTGRES):  # the role exists on the server, as after any first database
        pass
    with psycopg.connect(SERVERS[Backend.POSTGRES], autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {user} LOGIN NOCREATEROLE".encode())
        admin.execute(f"GRANT pg_read_all_settings TO {user}".encode())
        admin.execute(f"CREATE DATABASE {db} OWNER {user}".encode())
    try:
        yield make_conninfo(SERVERS[Backend.POSTGRES], dbname=db, user=user)
    finally:
        with psycopg.connect(SERVERS[Backend.POSTGRES], autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)".encode())
            admin.execute(f"DROP ROLE IF EXISTS {user}".encode())


def test_without_the_right_to_alter_the_role_the_migration_warns_and_grant_fails(
    owned_by_a_plain_user: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="storage.migrate"):
        asyncio.run(migrate(owned_by_a_plain_user))
    assert any(
        "hazardwatch_grafana" in r.getMessage() and "defaults" in r.getMessage() for r in caplog.records
    )
    with pytest.raises(StorageError, match="read-only and 30 s defaults"):
        asyncio.run(grant(owned_by_a_plain_user))
    # its grants are there; only the defaults are missing, so its sessions are not read-only here
    with psycopg.connect(owned_by_a_plain_user, user=ROLE) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
        conn.execute("SELECT count(*) FROM tag")


def test_grant_as_the_owner_of_a_normal_database_succeeds() -> None:
    with migrated_db(Backend.POSTGRES) as dsn:
        assert asyncio.run(grant(dsn)) == []
        with psycopg.connect(dsn, user=ROLE) as conn:
            assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
            assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
