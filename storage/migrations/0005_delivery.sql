-- Notification delivery (alarms/dispatcher.py, issue 12). One dispatcher per site owns these
-- tables. The alarm writer inserts `notification` rows (the outbox); the dispatcher plans each
-- into deliveries (one per escalation step, person and channel) in one transaction with marking
-- the row 'planned', so a crash never plans a row twice nor forgets one. A delivery is marked
-- 'sending' (committed) before the provider is called and 'sent' only after the provider
-- accepted it; a delivery found 'sending' after a crash is reconciled with the provider (its
-- idempotency key) instead of being sent blindly again.

-- the alarm writer's commit wakes the dispatcher (one notification per statement, not per row)
CREATE FUNCTION notification_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('notification', '');
    RETURN NULL;
END $$;
CREATE TRIGGER notification_notify AFTER INSERT ON notification
    FOR EACH STATEMENT EXECUTE FUNCTION notification_notify();

-- One message to one recipient on one channel. A flood summary is a delivery too (seq NULL); the
-- deliveries it carries point to it (state 'grouped', summary_id).
CREATE TABLE delivery (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key             text NOT NULL UNIQUE,   -- idempotency key, sent to providers (OutId, SessionContext)
    seq             bigint,                 -- the notification it announces (NULL: a summary)
    n               integer,
    alarm_key       text,                   -- NULL: a summary
    event           text NOT NULL,          -- raised | reraised | resolved | summary
    priority        text NOT NULL,
    step            integer NOT NULL,       -- escalation step (0: at once)
    receiver        text NOT NULL,
    target          text NOT NULL,          -- duty_room | baobao | bureau_desk | mqtt | webhook | email
    channel         text NOT NULL,          -- sms | voice | mqtt | webhook | email | console
    person          text,                   -- the roster's person key, for people
    recipient       text NOT NULL,          -- phone, e-mail address, URL or topic prefix (evidence;
                                            -- shown masked by every reader but this table)
    group_interval_s integer NOT NULL,
    due_at          timestamptz NOT NULL,
    state           text NOT NULL,          -- planned | sending | retry | sent | failed | stopped
                                            -- | muted | inhibited | grouped | unconfirmed
    attempts        integer NOT NULL DEFAULT 0,
    claimed_by      text,                   -- the dispatcher run that marked it sending (a crash
                                            -- leaves another run's id: that run reconciles it)
    summary_id      bigint,                 -- grouped: the summary that carried it
    provider        text,
    provider_message_id text,
    request_id      text,
    sent_at         timestamptz,
    report_status   text,                   -- DELIVERED | FAILED | PENDING (provider's receipt)
    report_code     text,
    report_at       timestamptz,
    reason          text,                   -- why stopped / muted / inhibited / failed
    updated_at      timestamptz NOT NULL
);
CREATE INDEX delivery_open ON delivery (due_at) WHERE state IN ('planned', 'retry', 'sending');
CREATE INDEX delivery_alarm ON delivery (alarm_key, seq);
CREATE INDEX delivery_lane ON delivery (channel, recipient, sent_at) WHERE state = 'sent';

-- Every attempt at a provider: when, the outcome and the provider's answer (evidence).
CREATE TABLE delivery_attempt (
    delivery_id     bigint NOT NULL REFERENCES delivery (id),
    attempt         integer NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    outcome         text,                   -- accepted | retryable | permanent | recovered | not_found
                                            -- | unconfirmed (NULL: interrupted, reconciled at start)
    code            text,
    detail          text,
    provider_message_id text,
    PRIMARY KEY (delivery_id, attempt)
);

-- The dispatcher's journal of an alarm event's notification: planned, each escalation step
-- fired or stopped (acknowledged, cleared), muted, inhibited, grouped into a summary, failed.
CREATE TABLE delivery_journal (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    alarm_key   text,
    seq         bigint,
    n           integer,
    step        integer,
    what        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX delivery_journal_alarm ON delivery_journal (alarm_key, id);
