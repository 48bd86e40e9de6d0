-- Actions, appeals and nukes: the moderation workflow's one audit trail.
-- Portable SQL, as 0001: times are Unix milliseconds, enums lower-case names, lists JSON text.

-- Every moderation action: automatic verdicts, moderators' calls, appeal reversals, nukes and
-- their aegis, and human moderators' actions seen in chat.
CREATE TABLE actions (
    id               TEXT PRIMARY KEY,          -- UUID (v7, time-ordered; v8 for automatic ones)
    created_at       BIGINT NOT NULL,           -- Unix ms
    updated_at       BIGINT NOT NULL,           -- Unix ms of the last status change
    expires_at       BIGINT NOT NULL,           -- a pending or sent action expires then
    channel          TEXT NOT NULL,
    target_user_id   TEXT NOT NULL,
    target_nick      TEXT NOT NULL,
    kind             TEXT NOT NULL,             -- hide|warn|timeout|ban|unmute|unban
    duration_ms      BIGINT,                    -- NULL: none, or a permanent ban
    reason           TEXT NOT NULL,
    source           TEXT NOT NULL,             -- automod|moderator|appeal|nuke|api|chat
    moderator        TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,               -- NULL when the caller gave none
    request_hash     TEXT NOT NULL,             -- what the key was first used for
    requested_by     TEXT NOT NULL,             -- the credential's name
    status           TEXT NOT NULL,             -- pending|sent|executed|failed|expired|recorded
    error            TEXT NOT NULL,             -- the chat's error code for a failed action
    detail           TEXT NOT NULL,             -- the bridge's free-form detail
    bridge_id        TEXT NOT NULL,             -- the bridge the command went to
    nuke_id          TEXT NOT NULL,
    appeal_id        TEXT NOT NULL,
    reversed_by      TEXT NOT NULL              -- the action that undid it (appeal, aegis)
);

CREATE INDEX actions_time ON actions (created_at, id);
CREATE INDEX actions_channel_time ON actions (channel, created_at, id);
CREATE INDEX actions_target_time ON actions (channel, target_user_id, created_at, id);
-- Only the few actions still waiting for a bridge: what every replica's dispatcher polls.
CREATE INDEX actions_undelivered ON actions (channel, status) WHERE status IN ('pending', 'sent');
CREATE INDEX actions_nuke ON actions (nuke_id) WHERE nuke_id <> '';

-- Appeals against actions: one open appeal per action (the partial unique index).
CREATE TABLE appeals (
    id                  TEXT PRIMARY KEY,       -- UUID v7
    created_at          BIGINT NOT NULL,
    action_id           TEXT NOT NULL REFERENCES actions (id),
    channel             TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    text                TEXT NOT NULL,
    status              TEXT NOT NULL,          -- open|upheld|overturned
    moderator           TEXT NOT NULL,
    note                TEXT NOT NULL,
    resolved_at         BIGINT,
    reversal_action_id  TEXT NOT NULL
);

CREATE UNIQUE INDEX appeals_one_open ON appeals (action_id) WHERE status = 'open';
CREATE INDEX appeals_time ON appeals (created_at, id);
CREATE INDEX appeals_channel_time ON appeals (channel, created_at, id);

-- Nukes: who was muted for saying what, so an aegis can undo exactly that.
CREATE TABLE nukes (
    id           TEXT PRIMARY KEY,              -- UUID v7
    created_at   BIGINT NOT NULL,
    channel      TEXT NOT NULL,
    pattern      TEXT NOT NULL,
    regex        BIGINT NOT NULL,               -- 0 or 1
    window_ms    BIGINT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    moderator    TEXT NOT NULL,
    reason       TEXT NOT NULL,
    targets      TEXT NOT NULL,                 -- JSON array of user ids
    undone_at    BIGINT,                        -- when an aegis undid it
    undone_by    TEXT NOT NULL
);

CREATE INDEX nukes_channel_time ON nukes (channel, created_at, id);
