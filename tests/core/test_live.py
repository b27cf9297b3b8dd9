"""LiveSnapshot: newest value per tag, never moved backwards except past a COMM_FAILURE marker."""

from __future__ import annotations

import numpy as np

from core.batch import ReadingBatch
from core.live import LiveSnapshot
from core.quality import Quality


def test_live_snapshot_never_moves_backwards() -> None:
    live = LiveSnapshot(3)
    assert (live.quality == Quality.BAD_LAST_KNOWN).all()
    live.apply(ReadingBatch.from_rows([(0, 10, 1.0, 192), (0, 20, 2.0, 192), (2, 5, 7.0, 0x18)]))
    live.apply(ReadingBatch.from_rows([(0, 15, 9.0, 192)]))  # older than what we have: ignored
    assert live.value[0] == 2.0 and live.ts[0] == 20
    assert live.quality[2] == 0x18 and np.isnan(live.value[1])
    # a device whose clock runs behind the failure marker still replaces it
    live.apply(ReadingBatch.from_rows([(2, 4, 8.0, 192)]))
    assert live.value[2] == 8.0 and live.quality[2] == Quality.GOOD
