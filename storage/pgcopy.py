"""PostgreSQL binary COPY streams built with numpy, never row by row.

A binary COPY row of fixed-width, non-NULL columns has a fixed size, so a whole batch is
one big-endian structured array between the PGCOPY header and trailer. Invariant: every
column in these layouts is NOT NULL on the wire (absent floats travel as NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["PG_EPOCH_OFFSET_US", "PgColumn", "encode", "row_dtype"]

# timestamptz on the wire is int64 microseconds since 2000-01-01 00:00 UTC.
PG_EPOCH_OFFSET_US = 946_684_800 * 1_000_000

_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_TRAILER = b"\xff\xff"

# PostgreSQL type -> big-endian numpy type of its binary send format.
_WIRE: dict[str, str] = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float8": ">f8",
    "timestamptz": ">i8",
    "bool": "u1",
}

PgColumn = tuple[str, str]  # (name, PostgreSQL type)


def row_dtype(columns: Sequence[PgColumn]) -> np.dtype:
    """The structured dtype of one binary COPY row: field count, then (length, value) pairs."""
    fields: list[tuple[str, str]] = [("_nfields", ">i2")]
    for name, pgtype in columns:
        fields += [(f"_len_{name}", ">i4"), (name, _WIRE[pgtype])]
    return np.dtype(fields)


def encode(columns: Sequence[PgColumn], values: dict[str, np.ndarray]) -> bytes:
    """One complete COPY ... (FORMAT BINARY) stream for these column arrays.

    Timestamp columns are given as int64 Unix microseconds and shifted to the PostgreSQL
    epoch here, vectorized.
    """
    dtype = row_dtype(columns)
    n = len(values[columns[0][0]])
    rows = np.empty(n, dtype=dtype)
    rows["_nfields"] = len(columns)
    for name, pgtype in columns:
        rows[f"_len_{name}"] = np.dtype(_WIRE[pgtype]).itemsize
        col = values[name]
        rows[name] = col - PG_EPOCH_OFFSET_US if pgtype == "timestamptz" else col
    return b"".join((_HEADER, rows.tobytes(), _TRAILER))
