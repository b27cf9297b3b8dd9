"""RunSummary: where every row of one run went, for the stop line and for tests.

Invariant (no torn spool records): rows handed to the hub reach the historian writer or
count as lost in the hub; the writer's rows plus an earlier run's spool are each written,
drained, still spooled, dropped, rejected or quarantined, so ``unaccounted`` is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RunSummary"]


@dataclass(frozen=True)
class RunSummary:
    """Where every row of one run went, for the stop line and for tests.

    Rows handed to the hub (``readings`` + ``comm_markers`` + ``gap_markers``) reach the
    historian writer (``to_historian``) unless the hub dropped them or still held them at
    shutdown (``lost_in_hub``). The writer's rows plus what an earlier run left in the spool
    are, at stop, each written directly, drained from the spool, still spooled, dropped
    (spool full or failing disk), rejected (timestamp outside 1970-2200) or quarantined.
    """

    readings: int  # collected from the devices
    comm_markers: int  # BAD|COMM_FAILURE rows the collectors wrote on a lost link
    gap_markers: int  # "not collected" rows for the previous run's crash
    to_historian: int  # taken by the historian writer
    written_rows: int  # into the database straight from memory (duplicates included)
    drained_rows: int  # into the database from the disk spool
    spooled_at_start: int  # left in the spool by an earlier run
    pending_rows: int  # still in the spool (drained at the next start)
    dropped_rows: int
    rejected_rows: int
    quarantined_rows: int

    @property
    def collected(self) -> int:
        return self.readings + self.comm_markers + self.gap_markers

    @property
    def lost_in_hub(self) -> int:
        return self.collected - self.to_historian

    @property
    def unaccounted(self) -> int:
        """Rows the writer took that are nowhere: 0 unless a torn spool record lost some."""
        done = (
            self.written_rows + self.drained_rows + self.pending_rows
            + self.dropped_rows + self.rejected_rows + self.quarantined_rows
        )  # fmt: skip
        return self.to_historian + self.spooled_at_start - done

    def text(self) -> str:
        parts = [
            f"stopped: {self.readings} readings collected, {self.comm_markers} comm-failure markers, "
            f"{self.gap_markers} crash-gap markers; {self.written_rows} rows written directly, "
            f"{self.drained_rows} drained from the spool"
            + (f" ({self.spooled_at_start} left there by an earlier run)" if self.spooled_at_start else "")
            + f", {self.pending_rows} still spooled, {self.dropped_rows} dropped"
        ]
        for n, what in (
            (self.rejected_rows, "rejected (timestamp outside 1970-2200)"),
            (self.quarantined_rows, "quarantined"),
            (self.lost_in_hub, "lost in the hub queue (dropped or not delivered at shutdown)"),
            (self.unaccounted, "unaccounted for"),
        ):
            if n > 0:
                parts.append(f"{n} {what}")
        if self.unaccounted < 0:  # a batch written again after a lost commit acknowledgement
            parts.append(f"{-self.unaccounted} rows counted twice by the writer (re-sent)")
        return "; ".join(parts)
