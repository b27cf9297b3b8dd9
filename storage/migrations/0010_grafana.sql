-- Issue 14: what Grafana reads, and the read-only role it reads it as.
--
-- collector_status / historian_status: the runtime's collector and historian health, written
-- beside engine_heartbeat every few seconds (storage/engine_beat.py), so the data-quality board
-- can show a dead link or a filling spool without scraping /metrics.
CREATE TABLE collector_status (
    engine          text NOT NULL,          -- engine_heartbeat.name (the plant's name)
    source          text NOT NULL,          -- the collector's source (one link: OPC UA server, Modbus gateway)
    enterprise      text,                   -- the enterprise whose tags it reads (NULL: several)
    protocol        text NOT NULL,          -- opcua | modbus | ...
    state           text NOT NULL,          -- starting | ok | failed (collector.base.RunnerStats)
    up              boolean NOT NULL,       -- the link works and every device behind it answers
    devices_up      integer NOT NULL,
    devices_total   integer NOT NULL,
    tags            integer NOT NULL,       -- tags this source owns
    readings        bigint NOT NULL,        -- since the engine started
    errors          bigint NOT NULL,
    reconnects      bigint NOT NULL,
    restarts        bigint NOT NULL,
    last_ok         timestamptz,            -- last successful read
    failed_since    timestamptz,            -- the current failure's start (NULL: not failing)
    last_error      text NOT NULL DEFAULT '',
    at              timestamptz NOT NULL,   -- when this row was written
    PRIMARY KEY (engine, source)
);

CREATE TABLE historian_status (
    engine            text PRIMARY KEY,
    db_up             boolean NOT NULL,     -- the writer's connection (false: rows go to the spool)
    pending_rows      bigint NOT NULL,      -- in the disk spool, waiting to be drained
    pending_bytes     bigint NOT NULL,
    written_rows      bigint NOT NULL,      -- since the engine started
    drained_rows      bigint NOT NULL,
    dropped_rows      bigint NOT NULL,      -- lost to the spool's size cap
    quarantined_rows  bigint NOT NULL,
    gap_markers       bigint NOT NULL,      -- crash-gap markers this run stamped at start
    at                timestamptz NOT NULL
);

-- A crash of the engine leaves a gap: the next start stamps BAD|COMM_FAILURE markers on every
-- point at the moment the dead run stopped (hazardwatch/runtime.py) and records the gap here,
-- from then to its own start, so the boards can mark it without scanning raw readings.
CREATE TABLE collection_gap (
    engine      text NOT NULL,
    gap_from    timestamptz NOT NULL,       -- the dead run's last heartbeat + one interval
    gap_to      timestamptz NOT NULL,       -- the next run's start
    points      integer NOT NULL,           -- markers stamped
    marked_at   timestamptz NOT NULL,
    PRIMARY KEY (engine, gap_from)
);

-- The read-only role Grafana's datasource logs in as (dashboards/provisioning). Roles belong
-- to the cluster, so it may exist already (another database of the same server); creating it
-- needs CREATEROLE: without it the migration goes on and `hazardwatch grafana grant` (run by
-- someone who may) does the rest. Its password is set by the DBA, never here.
CREATE FUNCTION hazardwatch_grafana_grants() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hazardwatch_grafana') THEN
        BEGIN
            CREATE ROLE hazardwatch_grafana LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;  -- created concurrently
            WHEN insufficient_privilege THEN
                RAISE WARNING 'cannot create role hazardwatch_grafana (needs CREATEROLE): '
                              'create it (CREATE ROLE hazardwatch_grafana LOGIN) and run '
                              '`hazardwatch grafana grant`';
                RETURN;
        END;
    END IF;
    -- Every statement read-only and bounded, whatever Grafana's datasource sends. Per database
    -- (one pg_db_role_setting row each): two databases of one server migrating at once would
    -- otherwise update the role's one shared row concurrently and one of them fail.
    BEGIN
        EXECUTE format('ALTER ROLE hazardwatch_grafana IN DATABASE %I SET default_transaction_read_only = on',
                       current_database());
        EXECUTE format('ALTER ROLE hazardwatch_grafana IN DATABASE %I SET statement_timeout = ''30s''',
                       current_database());
        -- JIT compiling a board's online-rate plan took longer than running it (bench/grafana.py;
        -- api/online.py turns it off for the same query)
        EXECUTE format('ALTER ROLE hazardwatch_grafana IN DATABASE %I SET jit = off', current_database());
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'cannot set hazardwatch_grafana''s defaults (read only, 30 s statements): set them as its owner';
    END;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO hazardwatch_grafana', current_database());
    GRANT USAGE ON SCHEMA public TO hazardwatch_grafana;
    -- What the boards read (dashboards/sql.py), and nothing else: no app_user, api_key,
    -- audit_log, alarm_command, notification or delivery. Any Grafana viewer can send the
    -- datasource any SQL, so these grants are the boundary: people's names and free text
    -- (who acknowledged, commented, requested or approved a bypass, and why) stay out too.
    GRANT SELECT ON enterprise, hazard_source, unit, tag, reading, reading_1m, reading_1m_open, tag_latest,
        engine_heartbeat, collector_status, historian_status, collection_gap TO hazardwatch_grafana;
    REVOKE SELECT ON alarm_state, alarm_journal, interlock_bypass FROM hazardwatch_grafana;
    GRANT SELECT (key, enterprise, county, hazard_source, unit, subject, kind, priority, status, condition,
                  acked, latching, since, shelved_until, value, "limit", raised_at, acked_at, seq)
        ON alarm_state TO hazardwatch_grafana;
    GRANT SELECT (seq, n, alarm_key, action, old_status, new_status, at, arrival, value, "limit")
        ON alarm_journal TO hazardwatch_grafana;
    GRANT SELECT (id, interlock, enterprise, county, hazard_source, input_tag, starts_at, expires_at, state,
                  requested_at, decided_at, restored_at)
        ON interlock_bypass TO hazardwatch_grafana;
    -- Before PostgreSQL 15 every role may create objects in schema public (and a session may turn
    -- its read-only default off): a viewer's SQL could plant a function the app then resolves.
    IF current_setting('server_version_num')::int < 150000
       AND has_schema_privilege('hazardwatch_grafana', 'public', 'CREATE') THEN
        RAISE WARNING 'hazardwatch_grafana may CREATE in schema public (PostgreSQL < 15 grants it to PUBLIC): '
                      'REVOKE CREATE ON SCHEMA public FROM PUBLIC once the app''s own user owns the schema '
                      'or holds CREATE itself';
    END IF;
END $$;

SELECT hazardwatch_grafana_grants();
