-- Readings on TimescaleDB: the same tables as 0002_readings.postgres.sql, as hypertables.
-- Only Apache-licensed features are used (hypertables, time_bucket, drop_chunks).
-- create_default_indexes => false: the primary key serves every query we run, and a
-- second (time) index would cost ingest throughput for nothing.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE reading (
    time     timestamptz NOT NULL,
    tag_id   integer NOT NULL,
    value    double precision NOT NULL,
    quality  smallint NOT NULL,
    PRIMARY KEY (tag_id, time)
);
SELECT create_hypertable('reading', 'time', chunk_time_interval => INTERVAL '1 day',
                         create_default_indexes => false);

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
);
SELECT create_hypertable('reading_1m', 'bucket', chunk_time_interval => INTERVAL '7 days',
                         create_default_indexes => false);
-- Rows are updated while their minute fills: leave room for HOT updates (chunks inherit it).
ALTER TABLE reading_1m SET (fillfactor = 80);

CREATE TABLE tag_latest (
    tag_id   integer PRIMARY KEY,
    time     timestamptz NOT NULL,
    value    double precision NOT NULL,
    quality  smallint NOT NULL
) WITH (fillfactor = 50);
