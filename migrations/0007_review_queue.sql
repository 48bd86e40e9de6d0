-- The review queue: a held message waits here for a moderator's ruling (or its expiry).
-- Portable SQL, as 0001: times are Unix milliseconds, enums lower-case names, lists JSON text.
CREATE TABLE review_items (
    id              TEXT PRIMARY KEY,          -- derived from the caller, channel and message
    created_at      BIGINT NOT NULL,           -- Unix ms
    expires_at      BIGINT NOT NULL,           -- a pending item is settled by on_expiry then
    on_expiry       TEXT NOT NULL,             -- allow|hide
    channel         TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    nick            TEXT NOT NULL,
    text            TEXT NOT NULL,             -- the original text: what the moderator judges
    reasons         TEXT NOT NULL,             -- JSON array of the verdict's reasons
    scores          TEXT NOT NULL,             -- JSON object: model label -> probability
    requested_by    TEXT NOT NULL,             -- the credential whose call held it
    records_only    BIGINT NOT NULL,           -- 1: actions on it are recorded, never sent
    hide_action_id  TEXT NOT NULL,             -- the "hide while pending" action, if any
    status          TEXT NOT NULL,             -- pending|approved|rejected|expired
    resolved_at     BIGINT,
    moderator       TEXT NOT NULL,
    label           TEXT NOT NULL,             -- the moderator's label of a rejection
    note            TEXT NOT NULL,
    action_id       TEXT NOT NULL              -- the action of a rejection or a hide on expiry
);

CREATE INDEX review_items_time ON review_items (created_at, id);
CREATE INDEX review_items_channel_time ON review_items (channel, created_at, id);
-- What the expiry task polls and the depth gauge counts: only the pending few.
CREATE INDEX review_items_pending ON review_items (expires_at) WHERE status = 'pending';
-- What a watcher catching up reads: outcomes in the order they happened.
CREATE INDEX review_items_resolved ON review_items (resolved_at, id) WHERE resolved_at IS NOT NULL;
