-- People and machines that use the API (api/, issue 13). Passwords are Argon2id hashes; an API
-- key is stored as the SHA-256 of its secret part (the key is random, 256 bits: a slow hash adds
-- nothing) and found by its public prefix. Users are disabled, never deleted: the audit log and
-- the alarm journal name them.

CREATE TABLE app_user (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       text NOT NULL UNIQUE,
    display_name   text NOT NULL,        -- shown in the journal: '李娜 (li.na)'
    role           text NOT NULL,        -- alarms.commands.Role value
    enterprise     text,                 -- enterprise roles: their enterprise's code
    county         text,                 -- bureau_duty: the county bureau; NULL: the city bureau
    password_hash  text,                 -- NULL: may not log in with a password (a key-only user)
    disabled       boolean NOT NULL DEFAULT false,
    failed_logins  integer NOT NULL DEFAULT 0,   -- consecutive, reset by a good login
    locked_until   timestamptz,
    token_version  integer NOT NULL DEFAULT 0,   -- raised on passwd/disable: older tokens die
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((role LIKE 'enterprise\_%') = (enterprise IS NOT NULL) OR role IN ('engineer', 'approver')),
    CHECK (county IS NULL OR role = 'bureau_duty')
);

CREATE TABLE api_key (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix        text NOT NULL UNIQUE,  -- 'hwk_' + 8 characters, shown in lists
    secret_sha256 bytea NOT NULL,
    user_id       integer NOT NULL REFERENCES app_user (id),
    name          text NOT NULL,         -- what uses it: 'SCADA bridge'
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);

-- Every write through the API is audited with who (and in which role) from where.
ALTER TABLE audit_log ADD COLUMN role text, ADD COLUMN address text;
CREATE INDEX audit_log_at ON audit_log (at);

-- The engine (`hazardwatch run`) says it is alive here every few seconds; the API's /readyz and
-- the console read it. One row per engine (name: the site, or an edge's enterprise).
CREATE TABLE engine_heartbeat (
    name        text PRIMARY KEY,
    at          timestamptz NOT NULL,
    started_at  timestamptz NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL
);
