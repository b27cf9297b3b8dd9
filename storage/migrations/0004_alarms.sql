-- Alarm lifecycle (alarms/, issue 11). One writer: the `hazardwatch run` process owns every
-- table here except alarm_command, where the API and the CLI insert commands for it to apply.
-- The writer numbers its commits (seq): a commit is written to the local alarm log first, then
-- here in one transaction (state, journal, outbox, command results, rule state and
-- alarm_writer.seq together), so replaying a commit after a crash or an outage is a no-op for
-- every row it already wrote. Times are timestamptz; `seq` orders what times cannot (several
-- transitions in one microsecond).

-- The writer's progress: the last commit stored here. A commit with seq <= this is done.
CREATE TABLE alarm_writer (
    id          smallint PRIMARY KEY CHECK (id = 1),
    seq         bigint NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Current state of every alarm that ever left NORMAL, keyed by its stable key (the rule key:
-- ENTERPRISE.EQUIPMENT.TAG.kind, or HAZARD_SOURCE.INTERLOCK.kind). Labels are copied from the
-- config when the alarm last changed, so a query never joins the config to filter.
CREATE TABLE alarm_state (
    key             text PRIMARY KEY,
    enterprise      text NOT NULL,
    county          text NOT NULL,
    hazard_source   text NOT NULL,
    unit            text,
    subject         text NOT NULL,      -- the tag or interlock key
    kind            text NOT NULL,      -- core.conditions.RuleKind name
    priority        text NOT NULL,      -- critical | high | medium | low
    status          text NOT NULL,      -- alarms.state.Status value
    condition       boolean NOT NULL,
    acked           boolean NOT NULL,
    latching        boolean NOT NULL,
    since           timestamptz NOT NULL,
    shelved_until   timestamptz,
    by_whom         text,
    reason          text,
    value           double precision,   -- at the last condition edge
    "limit"         double precision,
    raised_at       timestamptz,        -- the last RAISED or RERAISED
    acked_at        timestamptz,
    acked_by        text,
    seq             bigint NOT NULL     -- the commit that wrote this row
);
CREATE INDEX alarm_state_enterprise ON alarm_state (enterprise, status);

-- Every transition, append-only (never deleted by retention: regulation asks for at least
-- 30 days of electronic records). `at` is when it happened (the edge's source time for a
-- condition, the engine's clock for commands and timers); `arrival` when the engine saw it.
CREATE TABLE alarm_journal (
    seq         bigint NOT NULL,
    n           integer NOT NULL,       -- position within the commit (one batch may hold 100k edges)
    alarm_key   text NOT NULL,
    action      text NOT NULL,          -- alarms.state.Action value
    old_status  text NOT NULL,
    new_status  text NOT NULL,
    at          timestamptz NOT NULL,
    arrival     timestamptz NOT NULL,
    value       double precision,
    "limit"     double precision,
    actor       text NOT NULL,          -- 'engine', or the person who commanded
    command_id  uuid,
    detail      jsonb,
    PRIMARY KEY (seq, n)
);
CREATE INDEX alarm_journal_key ON alarm_journal (alarm_key, seq);
CREATE INDEX alarm_journal_at ON alarm_journal (at);

-- Operator commands (ack, reset, shelve, unshelve, comment, feedback, supervise, respond),
-- inserted by the API or CLI as 'pending'; the writer applies each once, in id order, and
-- stores the outcome in the same transaction as the transition it caused.
CREATE TABLE alarm_command (
    id            uuid PRIMARY KEY,
    alarm_key     text NOT NULL,
    command       text NOT NULL,
    actor         text NOT NULL,
    role          text NOT NULL,
    enterprise    text,                 -- the actor's enterprise (NULL: bureau or engineer)
    args          jsonb NOT NULL DEFAULT '{}',
    submitted_at  timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL DEFAULT 'pending',  -- pending | applied | rejected
    reason        text,                 -- why it was rejected
    result        text,                 -- the alarm's status after it was applied
    applied_at    timestamptz,
    seq           bigint                -- the commit that applied or rejected it
);
CREATE INDEX alarm_command_pending ON alarm_command (submitted_at) WHERE status = 'pending';

CREATE FUNCTION alarm_command_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('alarm_command', NEW.id::text);
    RETURN NEW;
END $$;
CREATE TRIGGER alarm_command_notify AFTER INSERT ON alarm_command
    FOR EACH ROW EXECUTE FUNCTION alarm_command_notify();

-- Outbox: who must be told what, one row per annunciating or resolving event. Delivery
-- (routing, rosters, channels, evidence) reads from here (issue 12).
CREATE TABLE notification (
    seq         bigint NOT NULL,
    n           integer NOT NULL,       -- the journal row it announces
    alarm_key   text NOT NULL,
    event       text NOT NULL,          -- raised | reraised | resolved
    priority    text NOT NULL,
    labels      jsonb NOT NULL,
    message_zh  text NOT NULL,
    message_en  text NOT NULL,
    created_at  timestamptz NOT NULL,
    state       text NOT NULL DEFAULT 'pending',
    PRIMARY KEY (seq, n)
);
CREATE INDEX notification_pending ON notification (seq) WHERE state = 'pending';

-- Who did what, for audits: commands (applied or rejected) and configuration changes.
CREATE TABLE audit_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}',
    seq     bigint                      -- the writer's commit, when it wrote the row
);
CREATE UNIQUE INDEX audit_log_seq ON audit_log (seq, target, action) WHERE seq IS NOT NULL;

-- The rule engine's state that must agree with alarm_state after a crash: per rule key, whether
-- its condition is active and since when (µs since the epoch, as the engine keeps it). Delays
-- still running are not here: they restart from the next sample after a crash.
CREATE TABLE rule_state (
    key      text PRIMARY KEY,
    active   boolean NOT NULL,
    since    bigint NOT NULL,
    seq      bigint NOT NULL
);
