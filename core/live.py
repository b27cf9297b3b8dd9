"""LiveSnapshot: the newest value, quality and timestamp of every tag, as vectors.

A hub sink for the live view, the API and the console (collector fills it, they read it;
shared kernel, so the API needs no collector import). Updated with one vectorized
scatter per batch; an older sample never overwrites a newer one (out-of-order data),
except that real data always replaces a BAD|COMM_FAILURE marker.
"""

from __future__ import annotations

import numpy as np

from core.batch import ReadingBatch
from core.quality import Quality

__all__ = ["LiveSnapshot"]


class LiveSnapshot:
    def __init__(self, size: int) -> None:
        self.value = np.full(size, np.nan)
        self.quality = np.full(size, Quality.BAD_LAST_KNOWN, dtype=np.uint8)  # nothing received yet
        self.ts = np.zeros(size, dtype=np.int64)
        self.updates = 0

    def apply(self, batch: ReadingBatch) -> None:
        last = batch.last_per_tag()
        # After a communication failure any real sample is news, even one stamped by a
        # device clock that runs behind the gather time of the failure marker.
        newer = (last.ts >= self.ts[last.tag]) | (self.quality[last.tag] == Quality.BAD_COMM_FAILURE)
        tags = last.tag[newer]
        self.value[tags] = last.value[newer]
        self.quality[tags] = last.quality[newer]
        self.ts[tags] = last.ts[newer]
        self.updates += 1

    async def write(self, batch: ReadingBatch) -> None:
        self.apply(batch)
