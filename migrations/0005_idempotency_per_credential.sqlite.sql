-- Idempotency keys are scoped per credential: unique per (requested_by, idempotency_key), so
-- the same key from two credentials makes two actions. SQLite (this file; PostgreSQL has its
-- own) cannot drop a column's UNIQUE constraint, so `actions` is rebuilt without it, with the
-- columns 0003 made. A later migration that adds a column to `actions` must come after this
-- one.
--
-- `appeals` references `actions`: dropping the old table breaks those references until the
-- rows are back, so the foreign keys are checked at commit instead (foreign_keys = OFF would
-- be ignored inside the migration's transaction).
PRAGMA defer_foreign_keys = ON;

CREATE TABLE actions_0005 AS SELECT * FROM actions;
DROP TABLE actions;

CREATE TABLE actions (
    id               TEXT PRIMARY KEY,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    channel          TEXT NOT NULL,
    target_user_id   TEXT NOT NULL,
    target_nick      TEXT NOT NULL,
    kind             TEXT NOT NULL,
    duration_ms      BIGINT,
    reason           TEXT NOT NULL,
    source           TEXT NOT NULL,
    moderator        TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    idempotency_key  TEXT,                      -- unique per requested_by (below)
    request_hash     TEXT NOT NULL,
    requested_by     TEXT NOT NULL,             -- the credential's name
    status           TEXT NOT NULL,
    error            TEXT NOT NULL,
    detail           TEXT NOT NULL,
    bridge_id        TEXT NOT NULL,
    nuke_id          TEXT NOT NULL,
    appeal_id        TEXT NOT NULL,
    reversed_by      TEXT NOT NULL
);

INSERT INTO actions (id, created_at, updated_at, expires_at, channel, target_user_id,
    target_nick, kind, duration_ms, reason, source, moderator, message_id, idempotency_key,
    request_hash, requested_by, status, error, detail, bridge_id, nuke_id, appeal_id,
    reversed_by)
SELECT id, created_at, updated_at, expires_at, channel, target_user_id, target_nick, kind,
    duration_ms, reason, source, moderator, message_id, idempotency_key, request_hash,
    requested_by, status, error, detail, bridge_id, nuke_id, appeal_id, reversed_by
FROM actions_0005;
DROP TABLE actions_0005;

-- The indexes of 0003, dropped with the old table.
CREATE INDEX actions_time ON actions (created_at, id);
CREATE INDEX actions_channel_time ON actions (channel, created_at, id);
CREATE INDEX actions_target_time ON actions (channel, target_user_id, created_at, id);
CREATE INDEX actions_undelivered ON actions (channel, status) WHERE status IN ('pending', 'sent');
CREATE INDEX actions_nuke ON actions (nuke_id) WHERE nuke_id <> '';

CREATE UNIQUE INDEX actions_idempotency ON actions (requested_by, idempotency_key);
