"""Time partitions of the reading tables: created ahead and on demand, listed for retention.

Plain PostgreSQL: ``reading`` has one partition per UTC day (``reading_pYYYYMMDD``) and
``reading_1m`` one per UTC month (``reading_1m_pYYYYMM``); names are derived from the
range, so a name says exactly what it holds. TimescaleDB creates chunks itself; here they
are only listed. Invariant: partition DDL runs in its own short transaction, never inside a
data transaction (it locks the parent table).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from storage.db import Backend, Conn, translate_errors

__all__ = [
    "DAY_US",
    "PartitionCache",
    "TimeSlice",
    "ensure_partitions",
    "list_slices",
    "partition_days",
]

DAY_US = 86_400_000_000
_EPOCH = date(1970, 1, 1)
_LOCK_KEY = 0x48_57_50_41  # "HWPA": serializes partition DDL between our processes
_DAY_NAME = re.compile(r"^reading_p(\d{8})$")
_MONTH_NAME = re.compile(r"^reading_1m_p(\d{6})$")
# A batch spanning more days than this gets its days from np.unique instead of the
# min..max range, so one reading with a wild timestamp cannot create a year of partitions.
_DENSE_SPAN_DAYS = 8


@dataclass(frozen=True, slots=True, order=True)
class TimeSlice:
    """One partition or chunk: ``table`` holds rows with start_us <= time < end_us."""

    table: str
    name: str
    start_us: int
    end_us: int
    schema: str = ""  # of a plain PostgreSQL partition (TimescaleDB names are qualified)


def _us(d: date) -> int:
    return (d - _EPOCH).days * DAY_US


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _next_month(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


def partition_days(ts: np.ndarray) -> list[int]:
    """UTC days (since 1970-01-01) that rows with these µs timestamps fall in."""
    if len(ts) == 0:
        return []
    lo, hi = int(ts.min()) // DAY_US, int(ts.max()) // DAY_US
    if hi - lo < _DENSE_SPAN_DAYS:
        return list(range(lo, hi + 1))
    return np.unique(ts // DAY_US).tolist()


async def ensure_partitions(conn: Conn, days: Iterable[int]) -> list[str]:
    """Create missing day partitions of ``reading`` and month partitions of ``reading_1m``.

    Runs (and commits) its own transaction; returns the names created.
    """
    wanted = sorted({_EPOCH + timedelta(days=d) for d in days})
    if not wanted:
        return []
    months = sorted({_month_start(d) for d in wanted})
    specs = [(f"reading_p{d:%Y%m%d}", "reading", d, d + timedelta(days=1)) for d in wanted]
    specs += [(f"reading_1m_p{m:%Y%m}", "reading_1m", m, _next_month(m)) for m in months]
    created = []
    with translate_errors("create partitions"):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
            cur = await conn.execute(
                "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NULL",
                [[s[0] for s in specs]],
            )
            missing = {row[0] for row in await cur.fetchall()}
            for name, parent, start, end in specs:
                if name not in missing:
                    continue
                ddl = (
                    f"CREATE TABLE {name} PARTITION OF {parent} FOR VALUES FROM "
                    f"('{start.isoformat()} 00:00:00+00') TO ('{end.isoformat()} 00:00:00+00')"
                )
                if parent == "reading_1m":
                    ddl += " WITH (fillfactor = 80)"  # rows are updated while their minute fills
                await conn.execute(ddl.encode())
                created.append(name)
    return created


async def list_slices(conn: Conn, backend: Backend, table: str) -> list[TimeSlice]:
    """The partitions (or chunks) of ``table`` in time order."""
    with translate_errors(f"list partitions of {table}"):
        if backend is Backend.TIMESCALEDB:
            cur = await conn.execute(
                """
                SELECT format('%%I.%%I', chunk_schema, chunk_name), range_start, range_end
                FROM timescaledb_information.chunks
                WHERE hypertable_schema = current_schema() AND hypertable_name = %s
                """,
                [table],
            )
            rows = await cur.fetchall()
            return sorted(TimeSlice(table, n, _dt_us(s), _dt_us(e)) for n, s, e in rows)
        cur = await conn.execute(
            """
            SELECT n.nspname, c.relname FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE i.inhparent = %s::regclass
            """,
            [table],
        )
        names = [(row[0], row[1]) for row in await cur.fetchall()]
    out = []
    for schema, name in names:
        if table == "reading" and (m := _DAY_NAME.match(name)):
            d = datetime.strptime(m[1], "%Y%m%d").date()
            out.append(TimeSlice(table, name, _us(d), _us(d + timedelta(days=1)), schema))
        elif table == "reading_1m" and (m := _MONTH_NAME.match(name)):
            d = datetime.strptime(m[1] + "01", "%Y%m%d").date()
            out.append(TimeSlice(table, name, _us(d), _us(_next_month(d)), schema))
    return sorted(out)


def _dt_us(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class PartitionCache:
    """Days known to have partitions, so a writer issues partition DDL only for new days."""

    def __init__(self) -> None:
        self._known: set[int] = set()

    def missing(self, ts: np.ndarray) -> list[int]:
        return [d for d in partition_days(ts) if d not in self._known]

    async def ensure(self, conn: Conn, ts: np.ndarray) -> None:
        days = self.missing(ts)
        if days:
            await ensure_partitions(conn, days)
            self._known.update(days)

    def forget(self) -> None:
        """Call after retention dropped partitions or a COPY found one missing."""
        self._known.clear()
