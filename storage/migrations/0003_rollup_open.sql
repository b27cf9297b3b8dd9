-- Minutes whose rollups a writer still holds in memory (storage/open_minutes.py).
-- BatchWriter keeps each tag's newest minute open and writes it to reading_1m once, when
-- it closes. A minute is listed here, in the same transaction that first stores a reading
-- of it, until every open rollup of it has been written; so after a crash the rows of the
-- listed minutes are the only ones reading_1m (and tag_latest) may be missing. A writer
-- that takes over recomputes those minutes from reading (tags tag_lo..tag_hi) and empties
-- the table; history queries read listed minutes from reading, never from reading_1m.
CREATE TABLE IF NOT EXISTS reading_1m_open (
    bucket  timestamptz PRIMARY KEY,
    tag_lo  integer NOT NULL,
    tag_hi  integer NOT NULL
);
