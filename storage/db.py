"""Connections to the historian and the psycopg -> core.errors boundary.

Invariant: nothing outside this package sees a psycopg exception. Losing the server
(refused, reset, timed out, shut down) becomes DatabaseUnavailable, which writers answer
by spooling; every other database error becomes StorageError. No message carries a
password: libpq quotes a malformed URL whole, so messages are redacted (core.redact) and
an exception whose text held a secret is not chained (a traceback would print it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from core.errors import DatabaseUnavailable, StorageError
from core.redact import redact

__all__ = ["Backend", "BlockingConn", "Conn", "autocommit", "connect", "connect_blocking", "translate_errors"]

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]
BlockingConn = psycopg.Connection[Any]  # for a writer on its own thread (alarms.service)


class Backend(StrEnum):
    """How time partitioning is done; fixed when the schema is first created."""

    POSTGRES = "postgres"  # declarative range partitions managed by the app
    TIMESCALEDB = "timescaledb"  # hypertables, drop_chunks


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise library errors from ``action`` as our exception tree."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
        # OperationalError covers lost connections, admin shutdown, cancelled statements,
        # deadlocks and a full disk: all are worth retrying later from the spool.
        raise _translated(DatabaseUnavailable, action, exc) from _cause(exc)
    except psycopg.Error as exc:
        raise _translated(StorageError, action, exc) from _cause(exc)


def _translated(kind: type[StorageError], action: str, exc: BaseException) -> StorageError:
    return kind(redact(f"{action}: {exc}".strip()))


def _cause(exc: BaseException) -> BaseException | None:
    """``exc`` to chain, or None when its text holds a secret (a traceback would show it)."""
    text = str(exc)
    return exc if redact(text) == text else None


def _options(connect_timeout_s: float, application_name: str) -> dict[str, Any]:
    return {
        "connect_timeout": max(1, round(connect_timeout_s)),
        "application_name": application_name,
        # Notice that a half-open TCP connection died without waiting for the kernel's
        # two-hour default (idle), or its ~15-minute retransmission limit (data sent on a link
        # that went silent: tcp_user_timeout, ms).
        "tcp_user_timeout": 30_000,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


async def connect(
    dsn: str,
    *,
    autocommit: bool = False,
    connect_timeout_s: float = 5.0,
    application_name: str = "hazardwatch",
) -> Conn:
    """Open one connection; DatabaseUnavailable when the server cannot be reached."""
    with translate_errors("connect"):
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=autocommit, **_options(connect_timeout_s, application_name)
        )


def connect_blocking(
    dsn: str,
    *,
    connect_timeout_s: float = 5.0,
    application_name: str = "hazardwatch",
) -> BlockingConn:
    """``connect`` for a thread that is not the event loop's: blocks while it waits on the
    server (releasing the GIL), so its round trips never wait for the loop."""
    with translate_errors("connect"):
        return psycopg.Connection.connect(dsn, **_options(connect_timeout_s, application_name))


@contextlib.asynccontextmanager
async def autocommit(conn: Conn) -> AsyncIterator[Conn]:
    """Run a block in autocommit mode (DDL and maintenance that manage their own
    transactions), restoring the connection's mode afterwards."""
    if conn.autocommit:
        yield conn
        return
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise StorageError("maintenance needs a connection that is not inside a transaction")
    with translate_errors("switch to autocommit"):
        await conn.set_autocommit(True)
    try:
        yield conn
    finally:
        if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
            await conn.set_autocommit(False)
