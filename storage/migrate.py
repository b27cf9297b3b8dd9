"""Schema migrations: numbered SQL files applied in order and recorded in schema_version.

Invariants: a version is applied at most once (re-running is a no-op); a database whose
schema is newer than this code is refused; the backend (plain partitions or TimescaleDB)
is chosen when the first migration runs and recorded, so it never flips later.
Files in storage/migrations: ``NNNN_name.sql`` applies to every backend;
``NNNN_name.postgres.sql`` and ``NNNN_name.timescaledb.sql`` are the two variants of one
version and come together.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from psycopg.errors import Diagnostic

from core.errors import SchemaError
from storage.db import Backend, Conn, autocommit, translate_errors

__all__ = [
    "Migration",
    "SchemaState",
    "detect_backend",
    "latest_version",
    "load_migrations",
    "require_current_schema",
    "schema_state",
    "upgrade",
]

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.(postgres|timescaledb))?\.sql$")
# Serializes concurrent `db upgrade` runs against one database (arbitrary constant).
_LOCK_KEY = 0x48_57_4D_49  # "HWMI"

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    backend     text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SchemaState:
    version: int  # 0: nothing applied
    backend: Backend | None


def load_migrations(backend: Backend) -> list[Migration]:
    """The migrations for ``backend`` in version order; SchemaError on a malformed set."""
    found: dict[int, dict[str | None, tuple[str, str]]] = {}
    for entry in (resources.files("storage") / "migrations").iterdir():
        m = _FILE.match(entry.name)
        if m is None:
            continue
        variants = found.setdefault(int(m[1]), {})
        variants[m[3]] = (m[2], entry.read_text(encoding="utf-8"))
    out = []
    for i, version in enumerate(sorted(found), start=1):
        variants = found[version]
        if version != i:
            raise SchemaError(f"migration {i:04d} is missing (found {version:04d})")
        if (None in variants and len(variants) > 1) or (None not in variants and len(variants) != 2):
            raise SchemaError(f"migration {version:04d}: need one common file or both backend variants")
        name, sql = variants.get(None) or variants[backend.value]
        out.append(Migration(version, name, sql))
    return out


def latest_version() -> int:
    return len(load_migrations(Backend.POSTGRES))


async def detect_backend(conn: Conn) -> Backend:
    """TimescaleDB when its extension is installed, or available and preloaded."""
    with translate_errors("detect backend"):
        cur = await conn.execute(
            """
            SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
                   EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
                   current_setting('shared_preload_libraries') ~ '(^|[ ,])timescaledb($|[ ,])'
            """
        )
        row = await cur.fetchone()
    assert row is not None
    installed, available, preloaded = row
    if installed or (available and preloaded):
        return Backend.TIMESCALEDB
    if available:
        log.warning("timescaledb is installed but not in shared_preload_libraries; using plain partitions")
    return Backend.POSTGRES


async def schema_state(conn: Conn) -> SchemaState:
    with translate_errors("read schema version"):
        cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        row = await cur.fetchone()
        if not row or not row[0]:
            return SchemaState(0, None)
        cur = await conn.execute(
            "SELECT coalesce(max(version), 0), min(backend) FROM schema_version"  # one backend per db
        )
        row = await cur.fetchone()
    assert row is not None
    return SchemaState(int(row[0]), Backend(row[1]) if row[1] else None)


async def require_current_schema(conn: Conn) -> Backend:
    """The database's backend, or SchemaError unless its schema is exactly this code's."""
    state = await schema_state(conn)
    latest = latest_version()
    if state.version > latest:
        raise SchemaError(f"database schema is version {state.version}, newer than this code ({latest})")
    if state.version < latest or state.backend is None:
        raise SchemaError(
            f"database schema is version {state.version}, code needs {latest}: run `hazardwatch db upgrade`"
        )
    return state.backend


async def upgrade(conn: Conn, *, until: int | None = None) -> list[Migration]:
    """Apply pending migrations (up to version ``until``, all by default), each in its own
    transaction; return those applied.

    ``conn`` must not be inside a transaction; it is left in the mode it came in. A migration's
    WARNINGs (say, 0010 could not create Grafana's role for want of CREATEROLE) are logged: the
    server sends them as notices, which a connection drops unless someone listens.
    """
    conn.add_notice_handler(_log_warning)
    try:
        async with autocommit(conn):
            with translate_errors("upgrade"):
                await conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
                try:
                    return await _upgrade_locked(conn, until)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    finally:
        conn.remove_notice_handler(_log_warning)


def _log_warning(d: Diagnostic) -> None:
    if d.severity_nonlocalized == "WARNING":
        log.warning("migration: %s", d.message_primary)


async def _upgrade_locked(conn: Conn, until: int | None) -> list[Migration]:
    await conn.execute(_BOOTSTRAP)
    state = await schema_state(conn)
    backend = state.backend or await detect_backend(conn)
    migrations = load_migrations(backend)
    if state.version > len(migrations):
        raise SchemaError(
            f"database schema is version {state.version}, newer than this code ({len(migrations)}); "
            "refusing to touch it"
        )
    cur = await conn.execute("SELECT version, checksum FROM schema_version")
    applied = dict(await cur.fetchall())
    for m in migrations[: state.version]:
        if applied.get(m.version) != m.checksum:
            log.warning("migration %04d_%s changed since it was applied", m.version, m.name)
    done = []
    for m in migrations[state.version : until]:
        async with conn.transaction():
            await conn.execute(m.sql.encode())  # bytes: sent as-is, no placeholder parsing
            await conn.execute(
                "INSERT INTO schema_version (version, name, backend, checksum) VALUES (%s, %s, %s, %s)",
                [m.version, m.name, backend.value, m.checksum],
            )
        log.info("applied migration %04d_%s (%s)", m.version, m.name, backend.value)
        done.append(m)
    return done
