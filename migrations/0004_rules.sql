-- Rules and channel policies: the database is their source of truth once seeded.
-- Portable SQL, as 0001: times are Unix milliseconds; each spec is the TOML text of one table
-- in the rules file's own format (config/rules.toml), so one compile path validates them all.

-- The rule set's revision: one row, bumped by every change inside the change's transaction.
-- `UPDATE ... SET revision = revision + 1 RETURNING revision` takes the row's write lock, so
-- concurrent writers are serialised and each gets its own revision, on both backends. 0 means
-- never seeded: the rules file seeds it at start.
CREATE TABLE ruleset_revision (
    id        BIGINT PRIMARY KEY,               -- always 1
    revision  BIGINT NOT NULL
);

INSERT INTO ruleset_revision (id, revision) VALUES (1, 0);

-- One row per rule.
CREATE TABLE rules (
    id          TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,                  -- a [[rule]] table as TOML (its id included)
    revision    BIGINT NOT NULL,                -- the revision that last changed it
    updated_at  BIGINT NOT NULL,                -- Unix ms
    updated_by  TEXT NOT NULL
);

-- One row per channel with a policy of its own; '*' is the default policy ([policy]).
CREATE TABLE channel_policies (
    channel     TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,                  -- a whole [policy] table as TOML
    revision    BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL
);

-- Every change ever made, by revision: what changed and to what. The seed is revision 1 (one
-- row per rule and policy it wrote); every later revision is one row.
CREATE TABLE ruleset_history (
    revision    BIGINT NOT NULL,
    target      TEXT NOT NULL,                  -- rule|policy
    target_id   TEXT NOT NULL,                  -- the rule's id or the policy's channel
    change      TEXT NOT NULL,                  -- seed|upsert|delete
    spec        TEXT,                           -- the new spec; NULL for a delete
    changed_at  BIGINT NOT NULL,                -- Unix ms
    changed_by  TEXT NOT NULL,
    PRIMARY KEY (revision, target, target_id)
);
