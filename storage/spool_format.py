"""Spool record format: a ReadingBatch as raw little-endian arrays behind a CRC-32.

``record = u32 payload_length | u32 crc32(payload) | payload`` and
``payload = u8 version | 3 pad | u32 n | i64 ts[n] | f64 value[n] | i32 tag[n] | u8 quality[n]``.
The 8-byte fields come first so that decoded arrays are aligned views of the payload.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from core.batch import ReadingBatch
from core.errors import StorageError

__all__ = ["MAGIC", "decode_payload", "encode_record", "payload_rows"]

MAGIC = b"HWSPOOL1"
_VERSION = 1
_RECORD = struct.Struct("<II")
_PAYLOAD = struct.Struct("<B3xI")


def encode_record(batch: ReadingBatch) -> bytes:
    payload = b"".join(
        (
            _PAYLOAD.pack(_VERSION, len(batch)),
            batch.ts.astype("<i8", copy=False).tobytes(),
            batch.value.astype("<f8", copy=False).tobytes(),
            batch.tag.astype("<i4", copy=False).tobytes(),
            batch.quality.tobytes(),
        )
    )
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


def payload_rows(payload: bytes | memoryview) -> int:
    return int(_PAYLOAD.unpack_from(payload)[1])


def decode_payload(payload: bytes) -> ReadingBatch:
    """The batch in a checksum-verified payload; StorageError on an unknown layout."""
    version, n = _PAYLOAD.unpack_from(payload)
    if version != _VERSION or len(payload) != _PAYLOAD.size + 21 * n:
        raise StorageError(f"spool record: version {version} with {len(payload)} bytes for {n} rows")
    off = _PAYLOAD.size
    ts = np.frombuffer(payload, "<i8", n, off)
    value = np.frombuffer(payload, "<f8", n, off + 8 * n)
    tag = np.frombuffer(payload, "<i4", n, off + 16 * n)
    quality = np.frombuffer(payload, "u1", n, off + 20 * n)
    # Native dtypes as ReadingBatch requires (a no-op view on little-endian hosts).
    return ReadingBatch(tag.astype(np.int32, copy=False), ts.astype(np.int64, copy=False),
                        value.astype(np.float64, copy=False), quality)  # fmt: skip
