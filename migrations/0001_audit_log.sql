-- The audit log: every verdict that was not a plain allow (shadow hits included).
-- Allowed messages are counted, never stored (data minimisation).
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are Unix milliseconds,
-- booleans 0/1, lists and reasons JSON text, so both backends read back the same values.
CREATE TABLE audit_log (
    id              TEXT PRIMARY KEY,          -- UUID v7: time-ordered
    decided_at      BIGINT NOT NULL,           -- Unix ms
    channel         TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    nick            TEXT NOT NULL,
    roles           TEXT NOT NULL,             -- JSON array of strings
    text            TEXT NOT NULL,             -- the original text, kept as evidence
    sent_at         BIGINT NOT NULL,           -- Unix ms
    decision        TEXT NOT NULL,             -- allow|hold|hide|warn|timeout|ban
    duration_ms     BIGINT,                    -- NULL: none, or a permanent ban
    enforced        BIGINT NOT NULL,           -- 0 or 1
    shadow_decision TEXT NOT NULL,
    reasons         TEXT NOT NULL,             -- JSON array of reasons
    model_version   TEXT NOT NULL,
    degraded        TEXT NOT NULL,             -- JSON array of component names
    elapsed_us      BIGINT NOT NULL
);

CREATE INDEX audit_log_channel_time ON audit_log (channel, decided_at);
CREATE INDEX audit_log_user_time ON audit_log (channel, user_id, decided_at);
