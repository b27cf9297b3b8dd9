"""The read-only role Grafana logs in as (migration 0010): grants again, after a DBA created it."""

from __future__ import annotations

import logging

from psycopg.errors import Diagnostic

from core.errors import StorageError
from storage.db import connect, translate_errors

__all__ = ["ROLE", "grant"]

ROLE = "hazardwatch_grafana"

log = logging.getLogger(__name__)


async def grant(dsn: str) -> list[str]:
    """Create the role if allowed and grant it SELECT on what the boards read (idempotent).

    Returns the server's warnings; raises StorageError when the role does not exist afterwards
    or its per-database defaults (read-only sessions, 30 s statements) could not be set, saying
    what the caller's database user lacks."""
    warnings: list[str] = []

    def note(d: Diagnostic) -> None:
        if d.severity_nonlocalized == "WARNING" and d.message_primary:
            warnings.append(d.message_primary)

    conn = await connect(dsn, autocommit=True, application_name="hazardwatch-grafana-grant")
    conn.add_notice_handler(note)
    try:
        with translate_errors("granting Grafana's read-only role"):
            await conn.execute("SELECT hazardwatch_grafana_grants()")
            cur = await conn.execute(
                """SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s),
                          EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
                                  WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = %s)
                                    AND d.datname = current_database()
                                    AND 'default_transaction_read_only=on' = ANY (s.setconfig))""",
                (ROLE, ROLE),
            )
            row = await cur.fetchone()
    finally:
        await conn.close()
    exists, defaults = row if row is not None else (False, False)
    if not exists:
        raise StorageError(
            f"role {ROLE} does not exist and this database user may not create it (CREATEROLE): "
            f"CREATE ROLE {ROLE} LOGIN as a superuser, then run this again"
        )
    if not defaults:
        raise StorageError(
            f"role {ROLE} got its grants, but not its read-only and 30 s defaults in this database "
            f"(altering a role needs CREATEROLE with ADMIN on it, or a superuser): run this again as such a user"
        )
    return warnings
