-- Readings on plain PostgreSQL: range partitions by UTC day (reading) and UTC month
-- (reading_1m), created ahead of time and on demand by storage/partitions.py and dropped
-- whole for retention. No DEFAULT partition: rows in one would block creating or
-- detaching the partition that should hold them.

CREATE TABLE reading (
    time     timestamptz NOT NULL,
    tag_id   integer NOT NULL,
    value    double precision NOT NULL,  -- NaN/Infinity allowed; such rows carry BAD quality
    quality  smallint NOT NULL,          -- OPC DA quality byte (core/quality.py)
    PRIMARY KEY (tag_id, time)
) PARTITION BY RANGE (time);

-- One row per tag and UTC minute. min/max/sum/count cover usable readings only (quality
-- GOOD or UNCERTAIN); bad_count counts the rest; last_* is the newest reading of any quality.
CREATE TABLE reading_1m (
    tag_id        integer NOT NULL,
    bucket        timestamptz NOT NULL,
    min           double precision,
    max           double precision,
    sum           double precision NOT NULL,
    count         integer NOT NULL,
    bad_count     integer NOT NULL,
    last_time     timestamptz NOT NULL,
    last_value    double precision NOT NULL,
    last_quality  smallint NOT NULL,
    PRIMARY KEY (tag_id, bucket)
) PARTITION BY RANGE (bucket);

-- Newest reading per tag; the writer only ever moves a row forward in time. Updated in
-- place on every batch, so leave room on each page for HOT updates.
CREATE TABLE tag_latest (
    tag_id   integer PRIMARY KEY,
    time     timestamptz NOT NULL,
    value    double precision NOT NULL,
    quality  smallint NOT NULL
) WITH (fillfactor = 50);
