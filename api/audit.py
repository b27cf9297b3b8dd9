"""The audit log of API writes: who (user and role), what, on which target, when, from where.

Every route that changes anything calls ``record`` in the same transaction as its change (or,
for a refused login, on its own), so the log and the change never disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from api.principal import Principal
from storage.db import Conn, translate_errors

__all__ = ["record"]


async def record(
    conn: Conn,
    who: Principal | None,
    action: str,
    target: str,
    address: str,
    detail: dict[str, Any] | None = None,
    *,
    actor: str | None = None,
    role: str | None = None,
) -> None:
    """Append one row; ``who`` None (a refused login): ``actor`` names who was claimed."""
    with translate_errors("write audit log"):
        await conn.execute(
            """INSERT INTO audit_log (at, actor, action, target, detail, role, address)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            (
                datetime.now(UTC),
                who.actor if who else (actor or "anonymous"),
                action,
                target,
                Jsonb({**(detail or {}), **({"via": who.via} if who else {})}),
                who.role.value if who else role,
                address,
            ),
        )
