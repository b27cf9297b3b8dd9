-- Interlock bypass permits (旁路/摘除联锁审批, issue 13): the paper trail of a bypass, not the
-- bypass itself (that is the plant's physical switch, read from tag_latest). Rows are never
-- deleted. The stored state moves requested -> approved | rejected, approved -> restored;
-- "active" (starts_at <= now < expires_at) and "expired" (now >= expires_at) of an approved row
-- are computed when read, so nothing has to run at expiry (the engine may raise bypass_overdue
-- from expires_at). Each transition stores who and when on the row and writes an audit_log row
-- in the same transaction.

CREATE TABLE interlock_bypass (
    id                     uuid PRIMARY KEY,
    interlock              text NOT NULL,          -- HAZARD_SOURCE.CODE (alarms.model.Catalog)
    enterprise             text NOT NULL,          -- enterprise code and its county when requested,
    county                 text NOT NULL,          -- for tenancy (as alarm_state keeps them)
    hazard_source          text NOT NULL,
    input_tag              text,                   -- an input's tag key; NULL: the whole function
    reason                 text NOT NULL,
    compensating_measures  text NOT NULL,          -- 补偿措施
    starts_at              timestamptz NOT NULL,
    expires_at             timestamptz NOT NULL,
    state                  text NOT NULL DEFAULT 'requested',
    requested_by           text NOT NULL,          -- Principal.actor: '陈静 (eng_aa)'
    requested_by_id        integer NOT NULL REFERENCES app_user (id),
    requested_at           timestamptz NOT NULL,
    decided_by             text,                   -- approver or rejecter
    decided_by_id          integer REFERENCES app_user (id),
    decided_at             timestamptz,
    decision_note          text,
    restored_by            text,
    restored_by_id         integer REFERENCES app_user (id),
    restored_at            timestamptz,
    restore_note           text,
    CHECK (state IN ('requested', 'approved', 'rejected', 'restored')),
    CHECK (expires_at > starts_at),
    CHECK ((state = 'requested') = (decided_at IS NULL)),
    CHECK ((state = 'restored') = (restored_at IS NOT NULL)),
    -- four eyes: nobody approves their own request
    CHECK (state <> 'approved' AND state <> 'restored' OR decided_by_id <> requested_by_id)
);
CREATE INDEX interlock_bypass_interlock ON interlock_bypass (interlock, requested_at);
CREATE INDEX interlock_bypass_enterprise ON interlock_bypass (enterprise, requested_at);
CREATE INDEX interlock_bypass_county ON interlock_bypass (county, requested_at);
-- the approved ones still standing: what the live views and an overdue check read
CREATE INDEX interlock_bypass_approved ON interlock_bypass (expires_at) WHERE state = 'approved';
