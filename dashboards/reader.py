"""The read-only role Grafana logs in as (migration 0010): grants again, after a DBA created it."""

from __future__ import annotations

from storage.db import connect, translate_errors

__all__ = ["ROLE", "grant"]

ROLE = "hazardwatch_grafana"


async def grant(dsn: str) -> None:
    """Create the role if allowed and grant it SELECT on what the boards read (idempotent)."""
    conn = await connect(dsn, autocommit=True, application_name="hazardwatch-grafana-grant")
    try:
        with translate_errors("granting Grafana's read-only role"):
            await conn.execute("SELECT hazardwatch_grafana_grants()")
    finally:
        await conn.close()
